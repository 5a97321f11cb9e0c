"""Trusted gateway identity: the principal a gateway asserts, and the default budgets of what it names.

A gateway that authenticates its own keys sends `principal` ({"key", "user", "team", "org"},
ids) instead of a Spendgate secret. The identity is a fact, not a policy: the same Rego
decides who is charged and whether the request is admitted (it sees `input.identity.source`).
Entities never seen before are created by `first_sight.py` with the budgets of
`SPENDGATE_DEFAULT_BUDGETS`, parsed here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .budgets import BudgetSpec, as_windows

__all__ = ["Principal", "DefaultBudgets", "DEFAULT_BUDGET_TYPES", "parse_default_budgets"]

#: The entity types a principal creates, in the order their rows must be inserted (references first).
DEFAULT_BUDGET_TYPES = ("org", "team", "user", "team_member", "key")
DefaultBudgets = Mapping[str, tuple[BudgetSpec, ...]]


class Principal(BaseModel):
    """Who the caller is, as the gateway authenticated it: a key id, and the user, team and org it belongs to."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=200)
    user: str | None = Field(default=None, min_length=1, max_length=200)
    team: str | None = Field(default=None, min_length=1, max_length=200)
    org: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("key", "user", "team", "org")
    @classmethod
    def _no_slash(cls, value: str | None) -> str | None:
        if value is not None and "/" in value:
            raise ValueError("must not contain '/'")
        return value

    @property
    def member(self) -> str | None:
        """The team member id '<team>/<user>' when both are asserted."""
        return f"{self.team}/{self.user}" if self.team and self.user else None

    @property
    def team_org(self) -> str | None:
        """The org asserted for the team."""
        return self.org if self.team else None

    @property
    def user_org(self) -> str | None:
        """The org asserted for the user: only when there is no team (a personal key's org)."""
        return self.org if self.user and not self.team else None


def parse_default_budgets(text: str | None) -> DefaultBudgets:
    """`{"team": {"max_budget": "100", "duration": "1mo"}, …}` → windows per entity type.

    Raises ValueError naming the variable, the entry and the problem (checked at start-up).
    """
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise _refused(f"it is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise _refused("it is not a JSON object")
    found: dict[str, tuple[BudgetSpec, ...]] = {}
    for entity_type, budget in raw.items():
        if entity_type not in DEFAULT_BUDGET_TYPES:
            raise _refused(f"{entity_type!r} is not one of {', '.join(DEFAULT_BUDGET_TYPES)}")
        items = budget if isinstance(budget, list) else [] if budget is None else [budget]
        try:
            found[entity_type] = tuple(as_windows([BudgetSpec.model_validate(item) for item in items]))
        except ValidationError as exc:
            problem = "; ".join(
                f"{'.'.join([entity_type, *(str(p) for p in e['loc'])])}: {str(e['msg']).removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise _refused(problem) from None
        except ValueError as exc:
            raise _refused(f"{entity_type}: {exc}") from None
    return found


def _refused(problem: str) -> ValueError:
    return ValueError(
        "SPENDGATE_DEFAULT_BUDGETS must be a JSON object mapping key, user, team, org or team_member to a budget, "
        f'such as {{"team": {{"max_budget": "100", "duration": "1mo"}}}} ({problem})'
    )
