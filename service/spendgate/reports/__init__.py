"""Spend reports: rollups written with every record (`rollups.py`), read back by entity, model,
key, outcome and time bucket (`query.py`), shown as JSON, CSV or a table (`render.py`); `spendgate report` in `cli.py`."""

from __future__ import annotations

from .rollups import ALL, RollupDelta, RollupKey, SpendRollupWriter, rollup_deltas, rollup_hour

__all__ = ["ALL", "RollupDelta", "RollupKey", "SpendRollupWriter", "rollup_deltas", "rollup_hour"]
