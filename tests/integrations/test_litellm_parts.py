"""The LiteLLM integration's parts that need no proxy: import without litellm, exact money,
request ids, tickets, token usage, the key store, and the denial answer."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest

from spendgate.client import Authorization
from spendgate.integrations.litellm import KeyStore, Ticket, denial_exception, new_request_id, usd
from spendgate.integrations.litellm.calls import TICKET_KEY, Attribution, attribution_of, ticket_of
from spendgate.integrations.litellm.usage import authorize_usage, max_output_tokens, recorded_usage
from spendgate.keys import hash_secret


def test_the_package_imports_without_litellm() -> None:
    code = ("import sys, spendgate.integrations.litellm as m; "
            "assert 'litellm' not in sys.modules, 'imported litellm'; print(len(m.VARIABLES))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "7"


@pytest.mark.parametrize(("reported", "recorded"), [
    (0.00022500000000000002, "0.000225000"),  # float noise below the nano-dollar
    (7.500000000000001e-05, "0.000075000"),
    (2.5e-05, "0.000025000"),
    (0.1, "0.100000000"),  # the decimal LiteLLM shows, not the float's binary expansion
    (1.0000000005, "1.000000000"),  # half-even at the ledger's unit
    (1.0000000015, "1.000000002"),
    (0, "0E-9"),
    (None, "0E-9"),
    (float("nan"), "0E-9"),
    (-0.5, "0E-9"),
])
def test_litellm_costs_become_exact_nano_dollar_decimals(reported: float | None, recorded: str) -> None:
    assert usd(reported) == Decimal(recorded)
    assert str(usd(reported)) == recorded


def test_request_ids_differ_even_for_the_same_litellm_call_id() -> None:
    first, second = new_request_id("client-chosen"), new_request_id("client-chosen")
    assert first != second
    assert first.startswith("litellm:client-chosen:")
    assert len(new_request_id("x" * 10_000)) <= 500  # Spendgate's request id limit


def test_a_ticket_survives_the_metadata_round_trip_and_a_call_without_one_has_none() -> None:
    ticket = Ticket("litellm:c:1", False, Attribution("gpt-4o", "cust-9", ("search",)), key_hash="ab" * 32)

    metadata = {"tags": ["search"], TICKET_KEY: ticket.to_metadata()}

    assert ticket_of({"metadata": metadata}) == ticket
    assert ticket_of({"litellm_metadata": metadata}) == ticket
    assert ticket_of({"metadata": {"tags": ["search"]}}) is None
    assert ticket_of(None) is None


def test_a_ticket_keeps_who_priced_it_and_an_older_ticket_is_priced_by_litellm() -> None:
    ticket = Ticket("litellm:c:2", True, Attribution("gpt-4o", None), priced_by="spendgate")
    older = {key: value for key, value in ticket.to_metadata().items() if key != "priced_by"}

    assert ticket_of({"metadata": {TICKET_KEY: ticket.to_metadata()}}) == ticket
    assert Ticket.from_metadata(older) == Ticket("litellm:c:2", True, Attribution("gpt-4o", None))


def test_recorded_usage_reads_litellms_counts_with_cached_and_reasoning_parts() -> None:
    logged = {"prompt_tokens": 100, "completion_tokens": 40, "cache_hit": False, "metadata": {"usage_object": {
        "prompt_tokens_details": {"cached_tokens": 30}, "completion_tokens_details": {"reasoning_tokens": 12}}}}

    assert recorded_usage(logged) == {
        "input_tokens": 100, "output_tokens": 40, "cached_input_tokens": 30, "reasoning_tokens": 12}


@pytest.mark.parametrize(("logged", "expected"), [
    ({"prompt_tokens": 5, "completion_tokens": 3, "metadata": {"usage_object": None}},
     {"input_tokens": 5, "output_tokens": 3, "cached_input_tokens": 0, "reasoning_tokens": 0}),
    ({"prompt_tokens": 5, "completion_tokens": 3, "metadata": {"usage_object": {  # parts over their totals
        "prompt_tokens_details": {"cached_tokens": 9}, "completion_tokens_details": {"reasoning_tokens": 7}}}},
     {"input_tokens": 5, "output_tokens": 3, "cached_input_tokens": 5, "reasoning_tokens": 3}),
    ({"prompt_tokens": 5, "completion_tokens": 3, "cache_hit": True}, None),  # nothing bought: LiteLLM's 0
    ({"prompt_tokens": 0, "completion_tokens": 0}, None),
    ({"prompt_tokens": None, "completion_tokens": 3}, None),
    ({"prompt_tokens": 5.0, "completion_tokens": 3}, None),
    (None, None),
])
def test_recorded_usage_is_none_when_litellm_logged_nothing_spendgate_can_price(
    logged: object, expected: dict[str, int] | None,
) -> None:
    assert recorded_usage(logged) == expected


def test_authorize_usage_is_the_prompt_and_the_requests_output_bound() -> None:
    assert max_output_tokens({"max_tokens": 20}) == 20
    assert max_output_tokens({"max_completion_tokens": 30}) == 30
    assert max_output_tokens({"max_tokens": "20"}) == 0
    assert authorize_usage(input_tokens=12, max_tokens=20) == {"input_tokens": 12, "max_output_tokens": 20}
    assert authorize_usage(input_tokens=2_000_000_000, max_tokens=0) is None


def test_attribution_takes_litellms_end_user_before_the_body_and_cleans_tags() -> None:
    data = {"model": "gpt-4o", "user": "body-user", "metadata": {"tags": ["a", "a", "", 3, "b"]}}

    assert attribution_of(data, end_user_id="resolved") == Attribution("gpt-4o", "resolved", ("a", "b"))
    assert attribution_of(data, end_user_id=None).end_user == "body-user"
    assert attribution_of({}, end_user_id=None) == Attribution(None, None, ())


def test_the_key_store_finds_a_secret_by_spendgates_hash_and_forgets_the_oldest() -> None:
    store = KeyStore(capacity=2)
    digests = [store.remember(f"sk-sg-{n}") for n in range(3)]

    assert digests[2] == hash_secret("sk-sg-2")
    assert store.secret(digests[0]) is None
    assert [store.secret(d) for d in digests[1:]] == ["sk-sg-1", "sk-sg-2"]
    assert "sk-sg" not in repr(store)


def test_a_denial_answers_the_most_fundamental_status_with_every_reason() -> None:
    authorization = Authorization.from_json({"request_id": "r1", "decision": "deny", "reasons": [
        {"code": "budget_exceeded", "message": "team t has spent its budget", "entity": {"type": "team", "id": "t"}},
        {"code": "key_blocked", "message": "key k is blocked", "entity": {"type": "key", "id": "k"}},
    ]})

    answer = denial_exception(authorization)

    assert answer.status_code == 403
    error = answer.detail["error"]  # type: ignore[index]
    assert error["code"] == "key_blocked"
    assert error["message"] == "Spendgate refused this request: team t has spent its budget; key k is blocked"
    assert [reason["code"] for reason in error["reasons"]] == ["budget_exceeded", "key_blocked"]
