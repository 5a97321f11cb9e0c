"""What Redis ran while an action ran: its own count of commands (INFO commandstats), and the
commands clients sent, in order (MONITOR).

Commandstats count the commands a script runs inside Redis too, so callers compare commands whose
origin they know (EVALSHA is always a client's; which scripts call GET or HMGET is in their docs).
MONITOR tells them apart: what clients sent — one entry per command of a pipeline — is what crossed the
wire."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable

import redis.asyncio as aioredis

__all__ = ["UPKEEP", "client_commands_during", "commands_during"]


async def commands_during(
    redis_url: str, action: Callable[[], Awaitable[None]], commands: Iterable[str]
) -> dict[str, int]:
    """Calls of each of `commands` (e.g. "get") while `action` ran; commands never called are absent."""
    client = aioredis.from_url(redis_url)
    try:
        await client.config_resetstat()
        await action()
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name: int(stats[f"cmdstat_{name}"]["calls"]) for name in commands if f"cmdstat_{name}" in stats}


#: A connection's upkeep, not a request's: its handshake and redis-py's health check.
UPKEEP = frozenset({"HELLO", "CLIENT", "PING", "AUTH", "SELECT"})


async def client_commands_during(
    redis_url: str, action: Callable[[], Awaitable[None]], *, timeout: float = 10.0
) -> list[str]:
    """The commands clients sent while `action` ran (names, upper case, in order): none a script ran,
    nor a connection's `UPKEEP`."""
    watcher, marker = aioredis.from_url(redis_url), aioredis.from_url(redis_url)
    end = f"end-of-action-{uuid.uuid4().hex}"
    sent: list[str] = []
    try:
        await marker.ping()  # its connection's handshake happens before MONITOR starts
        async with watcher.monitor() as monitor:
            await action()
            await marker.echo(end)  # MONITOR lists it after everything the action sent
            async with asyncio.timeout(timeout):
                while True:
                    seen = await monitor.next_command()
                    if seen["command"] == f"ECHO {end}":
                        return sent
                    name = seen["command"].split(" ", 1)[0].upper()
                    if seen["client_type"] != "lua" and name not in UPKEEP:
                        sent.append(name)
    finally:
        await watcher.aclose()
        await marker.aclose()
