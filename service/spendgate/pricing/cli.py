"""`spendgate prices refresh | show` — the price table in policy data (policies/spendgate/pricing/data.json).

`refresh` rewrites the table from LiteLLM's `model_prices_and_context_window.json` (the copy bundled
with the `litellm` package when it is installed, or `--from PATH`): the models already in the table
get LiteLLM's current prices, `--model PATTERN` adds models. `show MODEL` prints the price the
pricing policy would use for MODEL (the same lookup: exact name, else the name after `provider/`).
Both work on SPENDGATE_POLICY_DIR unless told otherwise. A running service picks up a refreshed
table like any policy change (SPENDGATE_POLICY_RELOAD_SECONDS, or a restart).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import PolicyError
from ..money import format_nanos
from ..policy.embedded import compile_policy_set
from ..policy.loader import display_path, load_policy_set
from .table import (
    PRICE_UNITS_PER_USD,
    litellm_prices_file,
    litellm_version,
    read_table,
    refresh_table,
    render_table,
)

__all__ = ["add_prices_commands", "TABLE_PATH"]

#: Where the table lives under a policy directory (mounted at data.spendgate.pricing).
TABLE_PATH = Path("spendgate", "pricing", "data.json")
_NO_LITELLM = (
    "LiteLLM is not installed here, so its bundled price file cannot be found; pass --from PATH "
    "(e.g. model_prices_and_context_window.json from `pip download litellm --no-deps`)"
)


def _policy_dir() -> Path:
    from ..policy.cli import _configured_policy_dir

    return _configured_policy_dir()


def _refresh(args: argparse.Namespace) -> int:
    try:
        source_path = Path(args.source) if args.source else litellm_prices_file()
        if source_path is None:
            raise PolicyError(_NO_LITELLM)
        out = Path(args.out) if args.out else _policy_dir() / TABLE_PATH
        version = litellm_version() if not args.source else None
        source = f"LiteLLM {version} {source_path.name}" if version else f"{source_path.name} (LiteLLM's price file)"
        result = refresh_table(
            source_path.read_text(encoding="utf-8"), current=read_table(out), patterns=args.model or (),
            source=source, today=date.today(),
        )
    except (OSError, ValueError, PolicyError) as exc:
        print(f"spendgate prices refresh: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_table(result.document), encoding="utf-8")
    print(f"wrote {display_path(out)}: {len(result.document['prices'])} models, {len(result.updated)} priced "
          f"from {display_path(source_path)}")
    for model in result.missing:
        print(f"  {model}: not in the price file; kept as it was")
    for model, why in sorted(result.skipped.items()):
        print(f"  {model}: not converted ({why}); kept as it was")
    return 0


def _usd_per_million(units: Any) -> str:
    return f"${format_nanos(units)} / 1M tokens" if isinstance(units, int) else repr(units)


def _show(args: argparse.Namespace) -> int:
    try:
        policies = load_policy_set(Path(args.policies) if args.policies else _policy_dir())
        engine = compile_policy_set(policies)
        engine.set_input_json(json.dumps({"request": {"model": args.model}}))
        rows = json.loads(engine.eval_query_as_json("data.spendgate.pricing.entry")).get("result") or []
    except PolicyError as exc:
        print(f"spendgate prices show: {exc.message}", file=sys.stderr)
        return 2
    table = policies.data.get("spendgate", {}).get("pricing", {})
    if not rows:
        print(f"spendgate prices show: model {args.model} has no price in the table "
              f"({table.get('source', 'no source')}, {table.get('date', 'no date')}); add it with "
              f"`spendgate prices refresh --model {args.model}` or by hand", file=sys.stderr)
        return 1
    entry = rows[0]["expressions"][0]["value"]
    row = table["prices"][entry]
    print(f"{args.model}: priced as {entry} (table from {table.get('source')}, {table.get('date')})")
    for field, fallback in (("input", None), ("cached_input", "input"), ("output", None), ("reasoning", "output")):
        value = row.get(field, row.get(fallback) if fallback else None)
        note = f" (the {fallback} price)" if field not in row and fallback else ""
        print(f"  {field:<13}{_usd_per_million(value)}{note}")
    per_token = {k: format(Decimal(v) / PRICE_UNITS_PER_USD, "f") for k, v in row.items() if isinstance(v, int)}
    print(f"  USD per token: {json.dumps(per_token, sort_keys=True)}")
    return 0


def add_prices_commands(commands: Any) -> None:
    """Register `prices refresh` and `prices show` on the `spendgate` parser's subcommands."""
    prices = commands.add_parser("prices", help="the price table the pricing policy reads (refresh, show)")
    sub = prices.add_subparsers(dest="prices_command", required=True, metavar="COMMAND")

    refresh = sub.add_parser(
        "refresh", help="update the price table from LiteLLM's model_prices_and_context_window.json",
        description="Update the prices of the models in the table from LiteLLM's price file (the one bundled "
        "with the installed litellm package, or --from PATH); --model adds models. Prices are converted "
        "exactly (decimal, never float) to nano-USD per 1M tokens; the file is written sorted, with source "
        "and date.",
    )
    refresh.add_argument("--from", dest="source", metavar="PATH",
                         help="LiteLLM's price file (default: the copy bundled with the installed litellm)")
    refresh.add_argument("--out", metavar="PATH",
                         help=f"the table to update (default: $SPENDGATE_POLICY_DIR/{TABLE_PATH.as_posix()})")
    refresh.add_argument("--model", action="append", metavar="PATTERN",
                         help="also add models matching this glob (e.g. 'gpt-4.1*'); repeatable")
    refresh.set_defaults(run=_refresh)

    show = sub.add_parser("show", help="the price the pricing policy uses for a model")
    show.add_argument("model", metavar="MODEL")
    show.add_argument("--policies", metavar="DIR", help="a policy directory (default: $SPENDGATE_POLICY_DIR)")
    show.set_defaults(run=_show)
