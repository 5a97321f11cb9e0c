"""Map every failure to API.md's one JSON error shape; never a stack trace to the client."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import SpendgateError, error_body

__all__ = ["install_error_handlers"]

log = logging.getLogger("spendgate.api")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 400: "invalid_request"}


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


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        field = _field_path(tuple(error.get("loc", ())))
        message = str(error.get("msg", "is invalid"))
        message = message.removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "is not a known field (check its spelling in API.md)"
        elif error.get("type") == "missing":
            message = "is required"
        elif error.get("type") == "json_invalid":
            field, message = "body", "is not valid JSON"
        problems.append(f"{field}: {message}")
    return "; ".join(dict.fromkeys(problems)) or "the request body is invalid"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SpendgateError)
    async def _spendgate_error(_request: Request, exc: SpendgateError) -> JSONResponse:
        if exc.status >= 500:
            log.error("request failed: %s", exc.message)
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_request", _validation_message(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = "no such route; see API.md for the routes Spendgate offers" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(
            error_body("internal_error", "Spendgate hit an unexpected error; it has been logged. Retry, or report it."),
            status_code=500,
        )
