"""How request bodies are read as JSON: exact decimals, and every malformed body a 422.

FastAPI reads a body with `json.loads` and answers any failure other than a syntax error
(an integer of more than 4300 digits, JSON nested past the recursion limit) with a 400 and a
framework message. `JsonRoute` reads bodies with `parse_json` instead:

- numbers with a fraction or exponent become `Decimal`, so an amount of
  "0.1000000000000000055" is refused for its precision instead of silently becoming the
  float 0.1, and 1e999 is "larger than the largest amount" rather than infinity;
- an integer too long for `int()` becomes a `Decimal` too, so the field it sits in refuses
  it and the 422 names that field;
- deep nesting and bytes that are not UTF-8 raise `JSONDecodeError`, which FastAPI turns into
  the validation error that api/errors.py answers as a 422 "body: is not valid JSON (…)".

The hooks run only for numbers; a decision body (one amount at most) costs what it did.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

__all__ = ["JsonRoute", "parse_json"]

#: Far more digits than any field takes, far fewer than `int()` refuses (4300 by default).
_LONGEST_INT = 1000


def _int(text: str) -> int | Decimal:
    return int(text) if len(text) <= _LONGEST_INT else Decimal(text)


_decoder = json.JSONDecoder(parse_float=Decimal, parse_int=_int)


def parse_json(body: bytes) -> Any:
    """The body as Python values; `json.JSONDecodeError` says what is wrong and where."""
    try:
        text = body.decode("utf-8-sig")  # RFC 8259: UTF-8; a byte-order mark is tolerated
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8 text", "", exc.start) from None
    try:
        return _decoder.decode(text)
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects are nested too deeply", "", 0) from None
    except json.JSONDecodeError as exc:
        raise json.JSONDecodeError(f"{exc.msg} at line {exc.lineno} column {exc.colno}", exc.doc, exc.pos) from None


class _JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """`APIRouter(route_class=JsonRoute)`: the router's bodies are read by `parse_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_json(request: Request) -> Response:
            return await handle(_JsonRequest(request.scope, request.receive))

        return handle_json
