"""Map every failure to API.md's one JSON error shape; never a stack trace to the client."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    SpendgateError,
    Unauthorized,
    error_body,
)

__all__ = ["install_error_handlers"]

log = logging.getLogger("spendgate.api")

#: Statuses Starlette raises itself (routing, a body it cannot read), coded as the tree codes them.
_HTTP_CODES = {error.status: error.code for error in (Unauthorized, NotFound, MethodNotAllowed, PayloadTooLarge)}
#: Pydantic's error types for a body that is JSON but not an object.
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "model_type", "dict_type"})


def _field_path(loc: tuple[object, ...]) -> str:
    """('body', 'budget', 1, 'max_budget') → 'budget[1].max_budget'."""
    if loc and loc[0] in ("body", "query", "path"):
        loc = loc[1:]
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        text = str(part)
        # Union members show up as type names in the location; they say nothing to a user.
        if text.startswith(("function-", "list[", "tagged-union[")):
            continue
        path += f".{text}" if path else text
    return path or "body"


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _validation_message(request: Request, exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        loc = tuple(error.get("loc", ()))
        field = _field_path(loc)
        message = str(error.get("msg", "is invalid"))
        message = message.removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "is not a known field (check its spelling in docs/api.md)"
        elif error.get("type") == "missing":
            message = "is required"
        elif error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error")
            field, message = "body", "is not valid JSON" + (f" ({detail})" if detail else "")
        elif loc == ("body",) and error.get("type") in _NOT_AN_OBJECT:
            message = (
                "must be a JSON object"
                if _is_json(request)
                else "must be a JSON object sent with 'Content-Type: application/json'"
            )
        problems.append(f"{field}: {message}")
    return "; ".join(dict.fromkeys(problems)) or "the request body is invalid"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SpendgateError)
    async def _spendgate_error(_request: Request, exc: SpendgateError) -> JSONResponse:
        if exc.status >= 500:
            log.error("request failed: %s", exc.message)
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(InvalidRequest.code, _validation_message(request, exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it could not read at all; malformed input is a 422 here.
            error: SpendgateError = InvalidRequest(
                field="body", problem="could not be read; send a JSON object with 'Content-Type: application/json'"
            )
            return JSONResponse(error.body(), status_code=error.status)
        if exc.status_code == 405:
            error = MethodNotAllowed(method=request.method, path=request.url.path)
            return JSONResponse(error.body(), status_code=error.status, headers=exc.headers)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = (
            "no such route; see docs/api.md (or GET /docs) for the routes Spendgate offers"
            if exc.status_code == 404
            else str(exc.detail)
        )
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(
            error_body("internal_error", "Spendgate hit an unexpected error; it has been logged. Retry, or report it."),
            status_code=500,
        )
