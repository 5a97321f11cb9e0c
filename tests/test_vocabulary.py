"""The shared vocabulary agrees with the policies that speak it and the client that reads it."""

from __future__ import annotations

import re
from pathlib import Path

from spendgate.client.denials import DENIAL_STATUS
from spendgate.vocabulary import ALERT_CODES, DENY_CODES, ENTITY_TYPES

POLICIES = Path(__file__).resolve().parents[1] / "policies"


def _rego() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(POLICIES.rglob("*.rego")))


def test_every_reason_code_the_policies_emit_is_in_the_vocabulary() -> None:
    emitted = set(re.findall(r'"code":\s*"([a-z_]+)"', _rego()))
    assert emitted == set(DENY_CODES) | set(ALERT_CODES)


def test_every_entity_type_the_policies_name_is_in_the_vocabulary() -> None:
    named = set(re.findall(r'"type":\s*"([a-z_]+)"', _rego()))
    assert named == set(ENTITY_TYPES)


def test_the_client_maps_every_deny_code_and_only_those() -> None:
    assert set(DENIAL_STATUS) == set(DENY_CODES)
