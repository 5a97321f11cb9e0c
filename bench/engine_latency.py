"""Decision latency through each policy-engine adapter: embedded regorus vs the OPA REST adapter.

No OPA binary can be installed on the development machines, so the OPA adapter talks to the
OPA-compatible test server (tests/support/opa_compat.py, its own process, evaluating with
regorus): the figure is the adapter's HTTP round trip plus that server, not real OPA's speed.
Point --opa-url at a real OPA to measure that instead.

    .venv/bin/python bench/engine_latency.py [--count 2000] [--opa-url http://127.0.0.1:8181]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from spendgate.policy import load_policy_set  # noqa: E402
from spendgate.policy.embedded import EmbeddedEngine  # noqa: E402
from spendgate.policy.opa import OpaEngine  # noqa: E402
from support.opa_compat import OpaCompatServer  # noqa: E402
from test_policies import TEAM_KEY_INPUT  # noqa: E402


async def measure(name: str, engine: Any, count: int) -> None:
    await engine.start()
    for _ in range(50):  # warm-up: the push, the connection, the compiled engine
        await engine.decide(TEAM_KEY_INPUT)
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        await engine.decide(TEAM_KEY_INPUT)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    p50, p99 = statistics.median(timings), timings[max(0, int(len(timings) * 0.99) - 1)]
    print(f"  {name:44s} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   max {timings[-1]:7.3f} ms")
    await engine.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--opa-url", help="a real OPA server to measure as well")
    args = parser.parse_args()
    policies = load_policy_set(ROOT / "policies")
    print(f"{platform.processor() or platform.machine()}, {platform.python_version()}; "
          f"{args.count} decisions of a team-key input with {len(TEAM_KEY_INPUT['ledgers'])} candidate ledgers")
    await measure("embedded (regorus, in-process)", EmbeddedEngine(policies), args.count)
    server = OpaCompatServer()
    server.start()
    try:
        await measure("OPA adapter -> OPA-compatible test server", OpaEngine(server.url, policies), args.count)
    finally:
        server.stop()
    if args.opa_url:
        await measure(f"OPA adapter -> {args.opa_url}", OpaEngine(args.opa_url, policies), args.count)


if __name__ == "__main__":
    asyncio.run(main())
