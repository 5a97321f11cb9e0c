"""Redis' own count of the commands run while an action ran (INFO commandstats).

Commandstats count the commands a script runs inside Redis too, so callers compare commands whose
origin they know (EVALSHA is always a client's; which scripts call GET or HMGET is in their docs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import redis.asyncio as aioredis

__all__ = ["commands_during"]


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
