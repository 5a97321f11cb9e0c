"""The decision routes' fast lane: a well-formed POST /v1/authorize or /v1/record is answered here,
without the framework's per-request machinery (router scan, dependency resolution, request and
response wrappers), which cost more than the checks it makes.

What a request gets is the same either way: the same bearer-token check, the same JSON reading
(`parse_json`: exact decimals), the same request model, the same answer body and error shape.
Anything out of the ordinary — a wrong token, a body that is not JSON or does not validate, a
content type other than JSON — is handed on, body included, to the FastAPI routes in
routes_decisions.py, which answer it (and which the OpenAPI schema describes). So every error
message has one source, and this lane only ever answers the common case.

It sits in front of every middleware (`_SpendgateApp.build_middleware_stack`), so it answers its
errors with the app's own handlers: a `SpendgateError` with the error shape, anything unexpected
with the logged 500. A body without Content-Length, or longer than SPENDGATE_MAX_BODY_BYTES, is
left to the framework's stack (where `BodyLimit` answers 413).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import exact_json
from ..decisions import AuthorizeRequest, RecordRequest
from ..decisions.observed import observed_authorize, observed_record
from ..errors import SpendgateError
from ..runtime import Runtime
from .auth import token_matches
from .json_body import parse_json

__all__ = ["DecisionLane"]

_JSON_TYPE = b"application/json"


async def _authorize(runtime: Runtime, request: Any) -> dict[str, Any]:
    with runtime.authorize_slots.slot():  # 503 at once when the replica is already saturated
        return await observed_authorize(runtime=runtime, request=request)


async def _record(runtime: Runtime, request: Any) -> dict[str, Any]:
    return await observed_record(runtime=runtime, request=request)


class _Route(NamedTuple):
    model: type[BaseModel]
    answer: Callable[[Runtime, Any], Awaitable[dict[str, Any]]]


_ROUTES = {
    "/v1/authorize": _Route(AuthorizeRequest, _authorize),
    "/v1/record": _Route(RecordRequest, _record),
}


def _replay(body: bytes) -> Receive:
    """A `receive` that hands the already-read body to the next app, then reports a disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


class DecisionLane:
    """`app.add_middleware(DecisionLane, owner=app)`: `owner` is the FastAPI app (state, handlers)."""

    def __init__(self, app: ASGIApp, *, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        runtime: Runtime | None = getattr(self.owner.state, "runtime", None)
        authorization = content_type = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        if (
            runtime is None
            or (content_type is not None and content_type.split(b";", 1)[0].strip().lower() != _JSON_TYPE)
            or length is None
            or not length.isdigit()
            or int(length) > runtime.settings.max_body_bytes
        ):
            await self.app(scope, receive, send)  # the framework answers it (or says what is wrong)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        token = runtime.settings.gateway_token
        try:
            if not token_matches(authorization, token):
                raise ValueError("token")
            request = route.model.model_validate(parse_json(body))
        except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
            await self.app(scope, _replay(body), send)  # the framework answers it, in the one error shape
            return
        try:
            answer = await route.answer(runtime, request)
        except Exception as exc:  # noqa: BLE001 — answered by the app's own handler, as the framework would
            handler = self.owner.exception_handlers[SpendgateError if isinstance(exc, SpendgateError) else Exception]
            response = handler(Request(scope), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        content = exact_json.dumps(answer)  # orjson; the stdlib for an integer past 64 bits
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(content)).encode()), (b"content-type", _JSON_TYPE)],
        })
        await send({"type": "http.response.body", "body": content})
