"""The words the service, the policies and the client share: entity types and reason codes.

One list each, so a new entity type or deny code is added in one place;
`tests/test_vocabulary.py` checks these sets against the Rego under `policies/` and against
the client's denial mapping, so a policy that starts emitting a new code fails a test until
the code is named here.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ENTITY_TYPES", "DENY_CODES", "ALERT_CODES"]

#: Every kind of entity a ledger can belong to, in the order reports and messages list them.
ENTITY_TYPES: Final = ("org", "team", "user", "team_member", "key", "key_model", "end_user", "tag")

#: Reason codes of an authorize denial (API.md "Decision routes").
DENY_CODES: Final = ("budget_exceeded", "invalid_key", "key_blocked", "key_expired", "model_not_allowed")

#: Codes of the alerts an allowed decision may carry.
ALERT_CODES: Final = ("soft_budget_crossed",)
