"""exact_json: orjson's bytes where orjson is exact, and integers of any size exact both ways."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendgate import exact_json

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON)
def test_any_document_of_integers_strings_and_containers_round_trips_exactly(document: object) -> None:
    assert exact_json.loads(exact_json.dumps(document)) == document


def test_within_64_bits_the_bytes_are_orjsons() -> None:
    document = {"a": [2**63 - 1, -(2**63)], "b": "text", "c": None}
    assert exact_json.dumps(document) == orjson.dumps(document)


def test_an_integer_past_64_bits_is_written_and_read_exactly() -> None:
    document = {"detail": 2**70 + 1, "below": -(2**65) - 3}
    raw = exact_json.dumps(document)
    assert raw == b'{"detail":1180591620717411303425,"below":-36893488147419103235}'
    assert exact_json.loads(raw) == document
    assert exact_json.loads(raw.decode()) == document
    assert orjson.loads(raw) != document  # what orjson alone reads: floats


def test_text_the_stdlib_wrote_reads_the_same() -> None:
    document = {"reasons": [{"n": 10**30}], "s": "é"}
    assert exact_json.loads(json.dumps(document)) == document


def test_what_orjson_refuses_reads_as_the_stdlib_reads_it() -> None:
    assert exact_json.loads("[1e400]") == [float("inf")]
    assert exact_json.loads(b'{"a": NaN}')["a"] != exact_json.loads(b'{"a": NaN}')["a"]  # NaN, as json.loads


def test_text_that_is_not_json_says_where() -> None:
    with pytest.raises(json.JSONDecodeError, match="line 1 column 2"):
        exact_json.loads('{bad')
