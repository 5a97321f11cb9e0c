"""A small OpenAI-compatible upstream for the LiteLLM tests and bench: a real HTTP server, no network.

    python tests/support/fake_openai.py --port 9000 --prompt-tokens 12

`POST /v1/chat/completions` answers like OpenAI, with `usage`: `prompt_tokens` is the fixed
`--prompt-tokens` (the tests pass LiteLLM's own count of their prompt, so an estimate made from
the prompt equals the real cost) and `completion_tokens` is the request's `max_tokens` (default 20).
With `"stream": true` it sends SSE chunks and a last chunk carrying `usage`, then `[DONE]`.
The path prefix picks a behaviour, so one LiteLLM model can point at each:

    /v1/...        a normal answer
    /error/v1/...  a provider failure: HTTP 500 with OpenAI's error body
    /slow/v1/...   a stream that sends one chunk every 50 ms for a minute (for client disconnects)
    /cached/v1/... a normal answer whose usage also reports half the prompt tokens as cached
                   (`prompt_tokens_details.cached_tokens`) and half the completion tokens as
                   reasoning (`completion_tokens_details.reasoning_tokens`), rounded down

`GET /stats` → `{"completions": n, "disconnects": n}`: completions served in full, slow streams
whose client went away.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["build_app", "DEFAULT_COMPLETION_TOKENS"]

DEFAULT_COMPLETION_TOKENS = 20
SLOW_CHUNKS = 1200
SLOW_INTERVAL = 0.05
KEEP_ALIVE_SECONDS = 3600


def _usage(prompt_tokens: int, completion_tokens: int, details: bool = False) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if details:
        usage["prompt_tokens_details"] = {"cached_tokens": prompt_tokens // 2}
        usage["completion_tokens_details"] = {"reasoning_tokens": completion_tokens // 2}
    return usage


def _chunk(call_id: str, model: str, delta: dict[str, Any], finish: str | None = None,
           usage: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": call_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [] if usage is not None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


def build_app(prompt_tokens: int) -> Starlette:
    stats = {"completions": 0, "disconnects": 0}

    async def completions(request: Request) -> Response:
        return await _complete(request, details=False)

    async def cached(request: Request) -> Response:
        return await _complete(request, details=True)

    async def _complete(request: Request, *, details: bool) -> Response:
        body = await request.json()
        model = str(body.get("model", "gpt-4o"))
        completion_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens")
                                or DEFAULT_COMPLETION_TOKENS)
        call_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        usage = _usage(prompt_tokens, completion_tokens, details)
        if not body.get("stream"):
            stats["completions"] += 1
            return JSONResponse({
                "id": call_id, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi " * completion_tokens},
                             "finish_reason": "stop"}],
                "usage": usage,
            })

        async def stream() -> AsyncIterator[bytes]:
            yield _chunk(call_id, model, {"role": "assistant", "content": ""})
            for _ in range(completion_tokens):
                yield _chunk(call_id, model, {"content": "hi "})
            yield _chunk(call_id, model, {}, finish="stop")
            yield _chunk(call_id, model, {}, usage=usage)
            yield b"data: [DONE]\n\n"
            stats["completions"] += 1

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def error(request: Request) -> Response:
        await request.body()
        return JSONResponse(
            {"error": {"message": "the fake provider failed", "type": "server_error", "code": "internal_error"}},
            status_code=500,
        )

    async def slow(request: Request) -> Response:
        body = await request.json()
        model = str(body.get("model", "gpt-4o"))
        call_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield _chunk(call_id, model, {"role": "assistant", "content": ""})
                for _ in range(SLOW_CHUNKS):
                    await asyncio.sleep(SLOW_INTERVAL)
                    yield _chunk(call_id, model, {"content": "slow "})
                yield _chunk(call_id, model, {}, finish="stop")
                yield b"data: [DONE]\n\n"
            except (asyncio.CancelledError, GeneratorExit):
                stats["disconnects"] += 1
                raise

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def show_stats(request: Request) -> Response:
        return JSONResponse(stats)

    return Starlette(routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/cached/v1/chat/completions", cached, methods=["POST"]),
        Route("/error/v1/chat/completions", error, methods=["POST"]),
        Route("/slow/v1/chat/completions", slow, methods=["POST"]),
        Route("/stats", show_stats, methods=["GET"]),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prompt-tokens", type=int, default=10)
    args = parser.parse_args()
    # uvicorn closes a keep-alive connection after 5 idle seconds by default. A proxy that reuses one
    # just as it closes gets "Connection error", and the tests run LiteLLM with no retries; a real
    # provider's client would retry. So idle connections stay open for the length of any test run.
    uvicorn.run(build_app(args.prompt_tokens), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, timeout_keep_alive=KEEP_ALIVE_SECONDS)


if __name__ == "__main__":
    main()
