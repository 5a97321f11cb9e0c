"""The price table in policy data (`policies/spendgate/pricing/data.json`), refreshed from LiteLLM.

LiteLLM's `model_prices_and_context_window.json` gives USD per token as JSON numbers
(`2.5e-06`). They are read as decimals from the JSON text (`parse_float=Decimal`), never as
binary floats, and scaled to the table's unit, integer nano-USD per 1M tokens (1e15 per USD
per token); a price with more than 15 decimals is not representable and is skipped, named.
The file is written with sorted keys, so a refresh with unchanged prices changes only `date`.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.resources
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = [
    "LITELLM_FIELDS",
    "MAX_PRICE",
    "PRICE_UNITS_PER_USD",
    "Refresh",
    "litellm_prices_file",
    "price_units",
    "read_table",
    "refresh_table",
    "render_table",
]

#: Table field → LiteLLM field (USD per token).
LITELLM_FIELDS = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cached_input": "cache_read_input_token_cost",
    "reasoning": "output_cost_per_reasoning_token",
}
#: nano-USD per 1M tokens in one USD per token.
PRICE_UNITS_PER_USD = 10**15
#: The largest price the pricing policy computes exactly with ($1000 per 1M tokens).
MAX_PRICE = 10**12
_LITELLM_FILES = ("model_prices_and_context_window_backup.json", "model_prices_and_context_window.json")


def price_units(usd_per_token: Decimal) -> int:
    """USD per token → integer nano-USD per 1M tokens; ValueError when not exact or out of range."""
    if not isinstance(usd_per_token, (Decimal, int)) or isinstance(usd_per_token, bool):
        raise ValueError(f"{usd_per_token!r} is not a number")
    units = Decimal(usd_per_token).scaleb(15)
    if units != units.to_integral_value():
        raise ValueError(f"{usd_per_token} USD per token has more than 15 decimals")
    if not 0 <= units <= MAX_PRICE:
        raise ValueError(f"{usd_per_token} USD per token is outside 0 to 0.001 (1000 USD per 1M tokens)")
    return int(units)


def litellm_prices_file() -> Path | None:
    """LiteLLM's bundled price file when the `litellm` package is installed, else None."""
    try:
        package = importlib.resources.files("litellm")
    except ModuleNotFoundError:
        return None
    for name in _LITELLM_FILES:
        candidate = package / name
        if candidate.is_file():
            return Path(str(candidate))
    return None


def litellm_version() -> str | None:
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class Refresh:
    """A refreshed table document and what happened to each model."""

    document: dict[str, Any]
    updated: list[str] = field(default_factory=list)
    #: Models asked for that the source lacks (kept at their old price when the table had them).
    missing: list[str] = field(default_factory=list)
    #: Model → why it could not be converted.
    skipped: dict[str, str] = field(default_factory=dict)


def _row(entry: Mapping[str, Any]) -> dict[str, int]:
    row: dict[str, int] = {}
    for ours, theirs in LITELLM_FIELDS.items():
        if theirs in entry:
            row[ours] = price_units(entry[theirs])
        elif ours in ("input", "output"):
            raise ValueError(f"it has no {theirs}")
    return row


def refresh_table(
    source_text: str, *, current: Mapping[str, Any], patterns: Iterable[str] = (), source: str, today: date
) -> Refresh:
    """The table `current` with its models' prices taken from `source_text`, plus models matching `patterns`.

    Other keys of `current` (the operator's `adjustments`) are kept as they are.
    """
    prices_doc = json.loads(source_text, parse_float=Decimal)
    if not isinstance(prices_doc, dict):
        raise ValueError("the price file must hold a JSON object of models")
    old_prices: dict[str, Any] = dict(current.get("prices") or {})
    wanted = set(old_prices)
    for pattern in patterns:
        matched = {name for name in prices_doc if name != "sample_spec" and fnmatch.fnmatchcase(name, pattern)}
        if not matched:
            raise ValueError(f"no model in the price file matches {pattern!r}")
        wanted |= matched
    result = Refresh(document={})
    prices: dict[str, Any] = {}
    for model in sorted(wanted):
        entry = prices_doc.get(model)
        if not isinstance(entry, dict):
            result.missing.append(model)
            if model in old_prices:
                prices[model] = old_prices[model]
            continue
        try:
            prices[model] = _row(entry)
        except ValueError as exc:
            result.skipped[model] = str(exc)
            if model in old_prices:
                prices[model] = old_prices[model]
            continue
        result.updated.append(model)
    result.document = {
        **{key: value for key, value in current.items() if key not in ("prices", "source", "date")},
        "source": source,
        "date": today.isoformat(),
        "prices": prices,
    }
    result.document.setdefault("adjustments", {})
    return result


def read_table(path: Path) -> dict[str, Any]:
    """The table document at `path`; an empty one when the file does not exist."""
    if not path.exists():
        return {}
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return document


def render_table(document: Mapping[str, Any]) -> str:
    """Stable text: sorted keys, two-space indent, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
