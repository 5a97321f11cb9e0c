"""Summarise a py-spy raw profile (collapsed stacks) of a `spendgate serve` replica by cost centre.

    python bench/profile_summary.py PROFILE.txt [--top 25]

Only the event-loop thread counts, and only when busy (epoll waits and anyio's idle worker threads
are left out). Each sample is put in
the innermost matching bucket below — so "authorize: facts" is the facts lookup including the
database round trips it waits on — and, separately, by where the sampled leaf frame is (socket
writes, SQLAlchemy, asyncpg, redis-py, regorus, pydantic, JSON, HTTP parsing …).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

#: (bucket, substring of a frame): the innermost frame matching any of these names the bucket.
BUCKETS: list[tuple[str, str]] = [
    ("database: pool pre-ping (a round trip per checkout)", "_async_ping"),
    ("authorize: other", "authorize (spendgate/decisions/authorize.py"),
    ("authorize: facts (key chain query, cache)", "FactsCache.load"),
    ("authorize: candidates + build_input", "candidate_ledgers (spendgate"),
    ("authorize: candidates + build_input", "build_input (spendgate"),
    ("authorize: policy decide()", "EmbeddedEngine.decide"),
    ("authorize: policy decide()", "OpaEngine.decide"),
    ("authorize: counters prior_decision (GET)", "RedisCounters.prior_decision"),
    ("authorize: counters read (HMGET pipeline)", "RedisCounters.read"),
    ("authorize: counters commit (Lua)", "RedisCounters.commit_decision"),
    ("authorize: counters (SQL)", "SqlCounters."),
    ("record: other", "record (spendgate/decisions/record.py"),
    ("record: find_event (SELECT spend event)", "LedgerStore.find_event"),
    ("record: prior_decision (GET)", "_attribution (spendgate/decisions/record.py"),
    ("record: ledger transaction (INSERT + upserts)", "LedgerStore.record"),
    ("record: settle (Lua)", "_settle (spendgate/decisions/record.py"),
    ("request body validation (pydantic)", "request_body_to_args"),
    ("request body validation (pydantic)", "_extract_form_body"),
    ("request: read body / JSON decode", "Request.json"),
    ("request: read body / JSON decode", "Request.body"),
    ("dependencies (auth, runtime in threadpool)", "solve_dependencies"),
    ("response: serialise + render JSON", "serialize_response"),
    ("response: serialise + render JSON", "JSONResponse.render"),
    ("response: serialise + render JSON", "jsonable_encoder"),
    ("response: send", "RequestResponseCycle.send"),
    ("reservation expiry sweeper", "_expire_reservations"),
    ("readyz", "readyz"),
]

#: Where the leaf frame is: first match wins.
LEAVES: list[tuple[str, tuple[str, ...]]] = [
    ("socket write/read syscalls (incl. waiting for the CPU/GIL)",
     ("_SelectorSocketTransport.write", "transports.py", "sock_recv", "_read_ready", "sendall")),
    ("event loop: scheduling", ("selectors.py", "base_events.py", "events.py")),
    ("regorus (Rust engine)", ("embedded.py",)),
    ("asyncpg", ("asyncpg/",)),
    ("SQLAlchemy / SQLModel", ("sqlalchemy/", "sqlmodel/")),
    ("redis-py", ("redis/",)),
    ("pydantic", ("pydantic",)),
    ("json", ("json/",)),
    ("HTTP: h11 / httptools / uvicorn", ("h11/", "httptools", "uvicorn/")),
    ("fastapi / starlette", ("fastapi/", "starlette/")),
    ("anyio / threads", ("anyio/", "threading.py", "concurrent/")),
    ("spendgate (own Python)", ("spendgate/",)),
]


def bucket_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, marker in BUCKETS:
            if marker in frame:
                return name
    # SQLAlchemy's asyncio layer runs the ORM in greenlets: their stacks start at the Session call
    # and py-spy cannot see which coroutine (facts, record, …) is waiting on them.
    if frames and ("sqlalchemy" in frames[0] or "sqlmodel" in frames[0] or "asyncpg" in frames[0]):
        return "database: SQLAlchemy/asyncpg in greenlets (caller not visible)"
    if any("redis/" in f for f in frames):
        return "redis-py (callbacks)"
    if any("h11_impl" in f or "httptools_impl" in f for f in frames):
        return "HTTP server + framework (outside the routes)"
    return "other (event loop, idle wake-ups)"


def leaf_of(frames: list[str]) -> str:
    leaf = frames[-1]
    for name, markers in LEAVES:
        if any(marker in leaf for marker in markers):
            return name
    return "other: " + leaf.split(" (", 1)[0]


def summarise(path: str, top: int) -> str:
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    routes: Counter[str] = Counter()
    total = dropped = idle = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            if any("WorkerThread.run" in f or "Thread._bootstrap" in f for f in frames):
                dropped += n
                continue
            if "EpollSelector.select" in frames[-1]:
                idle += n  # the loop waiting for I/O: not work
                continue
            total += n
            buckets[bucket_of(frames)] += n
            leaves[leaf_of(frames)] += n
            if any("authorize_route" in f for f in frames):
                routes["authorize"] += n
            elif any("record_route" in f for f in frames):
                routes["record"] += n
            else:
                routes["outside the route functions (HTTP, framework, loop)"] += n
    if not total:
        return f"{path}: no event-loop samples"
    out = [f"{path}: {total} busy event-loop samples ({idle} in epoll wait and {dropped} idle worker-thread "
           "samples left out)"]
    out.append("by route:")
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in routes.most_common()]
    out.append("by cost centre (innermost match):")
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in buckets.most_common(top)]
    out.append("by leaf frame:")
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in leaves.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    for path in args.profiles:
        print(summarise(path, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
