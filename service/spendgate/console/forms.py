"""Form bodies of console changes: read them, and validate them into the admin API's request models.

A form post is `application/x-www-form-urlencoded` (read here with the standard library, so no
multipart dependency); validation errors become the API's `InvalidRequest` with the message the
API's handler would write (`api.errors` formats both), so the console shows the API's words.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from ..api.errors import _validation_message
from ..errors import InvalidRequest

__all__ = ["read_form", "validated", "budget_after_set", "budget_after_remove"]

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body as a dict (the last value of a repeated name wins)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise InvalidRequest(field="body", problem="must be a form (application/x-www-form-urlencoded)")
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(field="body", problem="is not UTF-8 text") from None
    return dict(parse_qsl(text, keep_blank_values=True))


def validated(request: Request, model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """`model` from `data`, or InvalidRequest worded as the API words the same mistake."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        field, _, problem = _validation_message(request, RequestValidationError(errors)).partition(": ")
        raise InvalidRequest(field=field, problem=problem) from None


def _windows(budget: Any) -> list[dict[str, Any]]:
    """The windows of a public `budget` (None, one window or a list) as request dicts."""
    if budget is None:
        return []
    items = budget if isinstance(budget, list) else [budget]
    return [
        {"max_budget": w.max_budget, "soft_budget": w.soft_budget, "duration": w.duration, "reset": w.reset}
        for w in items
    ]


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def budget_after_set(budget: Any, form: dict[str, str]) -> list[dict[str, Any]]:
    """Every window of `budget`, with the form's window replacing the one of the same duration."""
    window: dict[str, Any] = {"max_budget": (form.get("max_budget") or "").strip(), "duration": _blank(form.get("duration"))}
    if _blank(form.get("soft_budget")) is not None:
        window["soft_budget"] = _blank(form.get("soft_budget"))
    if _blank(form.get("reset")) is not None:
        window["reset"] = _blank(form.get("reset"))
    kept = [w for w in _windows(budget) if w["duration"] != window["duration"]]
    return [*kept, window]


def budget_after_remove(budget: Any, duration: str | None) -> list[dict[str, Any]] | None:
    """Every window of `budget` but the one of `duration` (None: the window that never resets)."""
    kept = [w for w in _windows(budget) if w["duration"] != _blank(duration)]
    return kept or None
