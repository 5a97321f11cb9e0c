"""The console's changes (POST forms): budget windows, block/unblock, create and revoke keys.

Each change checks the session and CSRF token (`auth.require_change`), builds the admin API's
request model from the form (`forms.validated`, so mistakes read as the API words them) and
calls the admin service the API route calls. Success redirects back to the entity page (303);
a refused change re-renders the page with the service's message and status. A created key's
page is rendered directly, never redirected to, so its secret is shown once and not cached.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from ..admin.keys import create_key, delete_key
from ..admin.schemas import KeyCreate
from ..api.deps import RuntimeDep, SessionDep
from ..errors import InvalidRequest, SpendgateError
from ..runtime import Runtime
from .auth import PATH, check_token, clear_session_cookie, require_change, set_session_cookie
from .forms import budget_after_remove, budget_after_set, read_form, validated
from .kinds import ConsoleKind, kind_of, read_view, update_view
from .pages import entity_response
from .render import render, secure
from .session import Session

__all__ = ["router"]

router = APIRouter(prefix=PATH, include_in_schema=False)


def _entity_url(kind: str, entity_id: str, done: str | None = None) -> str:
    return f"{PATH}/e/{kind}/{quote(entity_id, safe='')}" + (f"?done={done}" if done else "")


@router.post("/login")
async def login(request: Request, runtime: RuntimeDep) -> Response:
    form = await read_form(request)
    which = check_token(runtime, form.get("token", ""))
    if which != "admin":
        message = (
            "That is the gateway token; the console needs the admin token (SPENDGATE_ADMIN_TOKEN)."
            if which == "gateway"
            else "Wrong token: sign in with the admin token (SPENDGATE_ADMIN_TOKEN)."
        )
        return render("login.html", status_code=401, error=message)
    response = secure(RedirectResponse(PATH, status_code=303))
    set_session_cookie(request, response)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    require_change(request, await read_form(request))
    response = secure(RedirectResponse(f"{PATH}/login", status_code=303))
    clear_session_cookie(response)
    return response


async def _target(request: Request) -> tuple[dict[str, str], Session, ConsoleKind, str]:
    form = await read_form(request)
    signed_in = require_change(request, form)
    kind = kind_of(form.get("kind", ""))
    entity_id = form.get("id", "")
    if not entity_id:
        raise InvalidRequest(field="id", problem="is required")
    return form, signed_in, kind, entity_id


async def _change(
    request: Request, session: Any, runtime: Runtime, signed_in: Session, kind: ConsoleKind, entity_id: str,
    body: dict[str, Any], done: str,
) -> Response:
    try:
        model = validated(request, kind.update_model, body)
        await update_view(session=session, runtime=runtime, kind=kind, entity_id=entity_id, body=model)
    except SpendgateError as exc:
        await session.rollback()
        return await entity_response(
            request, signed_in, session=session, runtime=runtime, kind_name=kind.name, entity_id=entity_id, error=exc
        )
    return secure(RedirectResponse(_entity_url(kind.name, entity_id, done), status_code=303))


@router.post("/actions/budget")
async def set_budget_window(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Set one budget window (replacing the window of the same duration); the others stay."""
    form, signed_in, kind, entity_id = await _target(request)
    view = await read_view(session=session, runtime=runtime, kind=kind, entity_id=entity_id)
    body = {"budget": budget_after_set(view.budget, form)}
    return await _change(request, session, runtime, signed_in, kind, entity_id, body, "budget")


@router.post("/actions/budget-remove")
async def remove_budget_window(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    form, signed_in, kind, entity_id = await _target(request)
    view = await read_view(session=session, runtime=runtime, kind=kind, entity_id=entity_id)
    body = {"budget": budget_after_remove(view.budget, form.get("duration"))}
    return await _change(request, session, runtime, signed_in, kind, entity_id, body, "budget-removed")


@router.post("/actions/block")
async def block(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    form, signed_in, kind, entity_id = await _target(request)
    blocked = form.get("blocked")
    body = {"blocked": blocked == "true" if blocked in ("true", "false") else blocked}
    return await _change(request, session, runtime, signed_in, kind, entity_id, body,
                         "blocked" if blocked == "true" else "unblocked")


@router.post("/actions/key-create")
async def create_api_key(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Create a key owned by the team or user of the form; the answer shows its secret once."""
    form, signed_in, kind, entity_id = await _target(request)
    if kind.name not in ("team", "user"):
        raise InvalidRequest(field="kind", problem="keys are created for a team or a user")
    body: dict[str, Any] = {f"{kind.name}_id": entity_id}
    if form.get("name", "").strip():
        body["name"] = form["name"].strip()
    if form.get("max_budget", "").strip():
        body["budget"] = budget_after_set(None, form)
    try:
        created = await create_key(
            session=session, counters=runtime.counters, facts=runtime.facts,
            body=validated(request, KeyCreate, body),
        )
    except SpendgateError as exc:
        await session.rollback()
        return await entity_response(
            request, signed_in, session=session, runtime=runtime, kind_name=kind.name, entity_id=entity_id, error=exc
        )
    return render("key_created.html", status_code=201, csrf=signed_in.csrf_token, kinds={}, path=request.url.path,
                  title="Key created", key=created, owner_kind=kind.name, owner_id=entity_id)


@router.post("/actions/key-revoke")
async def revoke_api_key(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    form, signed_in, kind, key_id = await _target(request)
    if kind.name != "key":
        raise InvalidRequest(field="kind", problem="only keys are revoked; block other entities instead")
    view = await read_view(session=session, runtime=runtime, kind=kind, entity_id=key_id)
    try:
        await delete_key(session=session, facts=runtime.facts, key_id=key_id)
    except SpendgateError as exc:
        await session.rollback()
        return await entity_response(
            request, signed_in, session=session, runtime=runtime, kind_name="key", entity_id=key_id, error=exc
        )
    owner = ("team", view.team_id) if view.team_id else ("user", view.user_id) if view.user_id else None
    target = _entity_url(owner[0], owner[1], "key-revoked") if owner else f"{PATH}?done=key-revoked"
    return secure(RedirectResponse(target, status_code=303))

