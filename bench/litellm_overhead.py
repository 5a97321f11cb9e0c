"""Latency the Spendgate callback adds to a LiteLLM proxy request (prints figures, asserts nothing).

    .venv/bin/python bench/litellm_overhead.py --requests 400 --concurrency 1

Starts, in one run: the fake OpenAI upstream (tests/support/fake_openai.py), one `spendgate serve`
(PostgreSQL + its own redis-server, through the test suite's `Cluster`), and two LiteLLM proxies
from `.venv-litellm` over the same upstream and the same `custom_auth` (Spendgate keys):
"baseline" without the callback, "spendgate" with it. Requests alternate between the two
proxies (so drift on a busy machine hits both alike); each is a non-streaming chat completion
with a Spendgate key. Prints p50/p90/p99 and mean per proxy, the difference and the ratio.
What the callback adds on the request path is its authorize (one HTTP round trip to Spendgate)
and the estimate; the record runs in LiteLLM's background event worker, after the response.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

import _common
from _common import ROOT, fmt_ms, machine_summary, pct

sys.path.insert(0, str(ROOT / "tests"))

from integrations.litellm_process import (  # noqa: E402
    CUSTOM_AUTH,
    FakeUpstream,
    LiteLLMProxy,
    litellm_executable,
)
from reliability.harness import ADMIN_TOKEN, GATEWAY_TOKEN, Cluster  # noqa: E402

assert _common  # imported for its sys.path set-up


async def _one(client: httpx.AsyncClient, proxy: LiteLLMProxy, secret: str) -> float:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"Bench {uuid.uuid4().hex}"}],
            "max_tokens": 20}
    started = time.perf_counter()
    response = await client.post(f"{proxy.url}/v1/chat/completions", json=body,
                                 headers={"authorization": f"Bearer {secret}"})
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{proxy.name}: HTTP {response.status_code} {response.text[:300]}")
    return elapsed


async def _measure(proxies: list[LiteLLMProxy], secret: str, requests: int, concurrency: int,
                   warmup: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {proxy.name: [] for proxy in proxies}
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for proxy in proxies:
            await asyncio.gather(*(_one(client, proxy, secret) for _ in range(warmup)))

        async def worker(count: int) -> None:
            for n in range(count):
                for proxy in proxies if n % 2 == 0 else reversed(proxies):
                    timings[proxy.name].append(await _one(client, proxy, secret))

        per_worker = max(1, requests // concurrency)
        await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
    return timings


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per proxy")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    litellm_executable()

    with tempfile.TemporaryDirectory(prefix="spendgate-bench-litellm-") as tmp:
        workdir = Path(tmp)
        upstream = FakeUpstream(prompt_tokens=10)
        service = Cluster(workdir, replicas=1)
        proxies: list[LiteLLMProxy] = []
        try:
            await upstream.start()
            await service.start()
            spendgate = {"SPENDGATE_URL": service.replicas[0].url, "SPENDGATE_GATEWAY_TOKEN": GATEWAY_TOKEN}
            proxies = [
                LiteLLMProxy(workdir, upstream.url, None, custom_auth=CUSTOM_AUTH, name="baseline"),
                LiteLLMProxy(workdir, upstream.url, spendgate, name="spendgate"),
            ]
            for proxy in proxies:
                proxy.start()
            await asyncio.gather(*(proxy.wait_ready() for proxy in proxies))
            async with httpx.AsyncClient(base_url=service.replicas[0].url, timeout=10,
                                         headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
                await admin.post("/v1/admin/users", json={"id": "bench-user"})
                created = await admin.post("/v1/admin/keys", json={
                    "id": "bench-key", "user_id": "bench-user", "budget": {"max_budget": "1000000"}})
                secret = created.json()["key"]

            timings = await _measure(proxies, secret, args.requests, args.concurrency, args.warmup)
        finally:
            for proxy in proxies:
                proxy.stop()
            await service.stop()
            upstream.stop()

    print(machine_summary())
    print(f"litellm {litellm_executable()}; {args.requests} requests per proxy, concurrency {args.concurrency}, "
          f"alternating; non-streaming chat completion, fake upstream on loopback")
    print(f"{'proxy':<10} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    figures: dict[str, tuple[float, float, float, float]] = {}
    for name, values in timings.items():
        ordered = sorted(values)
        figures[name] = (pct(ordered, 50), pct(ordered, 90), pct(ordered, 99), statistics.fmean(ordered))
        p50, p90, p99, mean = figures[name]
        print(f"{name:<10} {len(values):>5} {fmt_ms(p50):>8} {fmt_ms(p90):>8} {fmt_ms(p99):>8} {fmt_ms(mean):>8}")
    base, with_cb = figures["baseline"], figures["spendgate"]
    print(f"{'added':<10} {'':>5} {fmt_ms(with_cb[0] - base[0]):>8} {fmt_ms(with_cb[1] - base[1]):>8} "
          f"{fmt_ms(with_cb[2] - base[2]):>8} {fmt_ms(with_cb[3] - base[3]):>8}")
    print(f"{'ratio':<10} {'':>5} {with_cb[0] / base[0]:>8.2f} {with_cb[1] / base[1]:>8.2f} "
          f"{with_cb[2] / base[2]:>8.2f} {with_cb[3] / base[3]:>8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
