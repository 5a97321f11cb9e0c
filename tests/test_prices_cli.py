"""`spendgate prices refresh | show` and the shipped price table (policies/spendgate/pricing/data.json)."""

from __future__ import annotations

import importlib.util
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from spendgate.cli import main
from spendgate.pricing.table import MAX_PRICE, litellm_prices_file, price_units, refresh_table
from spendgate.settings import DEFAULT_POLICY_DIR

FIXTURE = Path(__file__).parent / "fixtures" / "litellm_prices.json"
SHIPPED = DEFAULT_POLICY_DIR / "spendgate" / "pricing" / "data.json"


def test_refresh_converts_litellm_prices_exactly_and_writes_a_sorted_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data.json"
    old_prices = {"gpt-4o": {"input": 1, "output": 1}, "retired-model": {"input": 5, "output": 6}}
    out.write_text(json.dumps({"prices": old_prices, "adjustments": {"team": {"t1": -1000}}}))

    code = main(["prices", "refresh", "--from", str(FIXTURE), "--out", str(out),
                 "--model", "gpt-4.1-*", "--model", "float-trap", "--model", "too-precise", "--model", "no-output"])

    assert code == 0
    table = json.loads(out.read_text())
    assert table == {
        "adjustments": {"team": {"t1": -1000}},  # the operator's, untouched
        "date": date.today().isoformat(),
        "prices": {
            "float-trap": {"input": 1_056_000_000, "output": 1, "reasoning": 37_500_000},  # float math: 1055999999
            "gpt-4.1-mini": {"cached_input": 100_000_000, "input": 400_000_000, "output": 1_600_000_000},
            "gpt-4.1-nano": {"input": 100_000_000, "output": 400_000_000},
            "gpt-4o": {"cached_input": 1_250_000_000, "input": 2_500_000_000, "output": 10_000_000_000},
            "retired-model": {"input": 5, "output": 6},  # not in the source: kept as it was
        },
        "source": "litellm_prices.json (LiteLLM's price file)",
    }
    assert out.read_text() == json.dumps(table, indent=2, sort_keys=True) + "\n"
    printed = capsys.readouterr().out
    assert "retired-model: not in the price file; kept as it was" in printed
    assert "too-precise: not converted (1.5E-16 USD per token has more than 15 decimals)" in printed
    assert "no-output: not converted (it has no output_cost_per_token)" in printed


def test_refresh_twice_gives_the_same_file(tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    assert main(["prices", "refresh", "--from", str(FIXTURE), "--out", str(out), "--model", "gpt-*"]) == 0
    first = out.read_text()
    assert main(["prices", "refresh", "--from", str(FIXTURE), "--out", str(out)]) == 0
    assert out.read_text() == first


def test_refresh_refuses_a_pattern_that_matches_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["prices", "refresh", "--from", str(FIXTURE), "--out", str(tmp_path / "d.json"), "--model", "gpt-9*"])

    assert code == 2
    assert "no model in the price file matches 'gpt-9*'" in capsys.readouterr().err
    assert not (tmp_path / "d.json").exists()


def test_refresh_without_from_uses_litellms_bundled_file_or_says_to_pass_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["prices", "refresh", "--out", str(tmp_path / "d.json")])

    if importlib.util.find_spec("litellm") is None:
        assert litellm_prices_file() is None
        err = capsys.readouterr().err
        assert code == 2
        assert "LiteLLM is not installed here" in err and "--from PATH" in err
    else:
        assert code == 0 and litellm_prices_file() is not None


@pytest.mark.parametrize("value, units", [("2.5e-06", 2_500_000_000), ("1e-15", 1), ("0.001", MAX_PRICE), ("0", 0)])
def test_price_units_are_exact_nano_usd_per_million_tokens(value: str, units: int) -> None:
    assert price_units(Decimal(value)) == units


@pytest.mark.parametrize("value", ["1e-16", "0.0010000000001", "-1e-06"])
def test_price_units_refuse_what_the_policy_cannot_price_exactly(value: str) -> None:
    with pytest.raises(ValueError):
        price_units(Decimal(value))


def test_refresh_never_reads_prices_as_floats() -> None:
    source = '{"m": {"input_cost_per_token": 1.056e-06, "output_cost_per_token": 1.908e-06}}'

    result = refresh_table(source, current={}, patterns=["m"], source="s", today=date(2026, 1, 2))

    assert result.document["prices"]["m"] == {"input": 1_056_000_000, "output": 1_908_000_000}


def test_show_prints_the_price_the_policy_uses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "show", "openai/gpt-4o", "--policies", str(DEFAULT_POLICY_DIR)]) == 0

    out = capsys.readouterr().out
    assert "openai/gpt-4o: priced as gpt-4o" in out
    assert "input        $2.500000 / 1M tokens" in out
    assert "reasoning    $10.000000 / 1M tokens (the output price)" in out


def test_show_says_how_to_add_a_model_the_table_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "show", "acme-llm", "--policies", str(DEFAULT_POLICY_DIR)]) == 1

    assert "spendgate prices refresh --model acme-llm" in capsys.readouterr().err


def test_the_shipped_table_names_its_source_and_date_and_prices_common_models() -> None:
    table = json.loads(SHIPPED.read_text())

    assert table["source"].startswith("LiteLLM ") and date.fromisoformat(table["date"])
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3", "o4-mini", "claude-sonnet-4-5",
            "claude-haiku-4-5", "claude-opus-4-5", "gemini-2.5-pro", "gemini-2.5-flash"} <= table["prices"].keys()
    for row in table["prices"].values():
        assert {"input", "output"} <= row.keys() <= {"input", "output", "cached_input", "reasoning"}
        assert all(isinstance(v, int) and 0 <= v <= MAX_PRICE for v in row.values())
    assert SHIPPED.read_text() == json.dumps(table, indent=2, sort_keys=True) + "\n"
