"""The console's pages (GET): sign-in, overview, browse, entity, request detail and policy.

Thin: each page calls the services that produce its data (`overview`, `entity_page`, the admin
services) and renders one template. Without a valid session a page redirects to the sign-in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from ..admin.lists import ListFilters, list_page
from ..api.deps import RuntimeDep, SessionDep
from ..errors import SpendgateError
from ..policy.reload import PolicyReloader
from ..runtime import Runtime
from .auth import PATH, current_session
from .entity_page import CHART_DAYS, bars, entity_extras, request_detail
from .kinds import KINDS, kind_of, read_view
from .overview import overview
from .render import render, secure
from .session import Session

__all__ = ["router", "entity_response"]

router = APIRouter(prefix=PATH, include_in_schema=False)

#: Largest policy data file the policy page shows (bytes).
_DATA_SHOWN = 256 * 1024


def _login_redirect() -> Response:
    return secure(RedirectResponse(f"{PATH}/login", status_code=303))


def _base(request: Request, session: Session, **context: Any) -> dict[str, Any]:
    return {"csrf": session.csrf_token, "kinds": KINDS, "path": request.url.path, **context}


def _error_page(request: Request, session: Session, error: SpendgateError) -> Response:
    """A refused page read (unknown entity, bad cursor …) as HTML, with the service's message and status."""
    return render("error.html", status_code=error.status, **_base(request, session, error=error, title="Not shown"))


@router.get("/login")
async def login_page(request: Request) -> Response:
    if current_session(request) is not None:
        return secure(RedirectResponse(PATH, status_code=303))
    return render("login.html", error=None)


@router.get("")
async def overview_page(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    signed_in = current_session(request)
    if signed_in is None:
        return _login_redirect()
    data = await overview(session=session, runtime=runtime)
    return render("overview.html", **_base(request, signed_in, data=data, title="Overview"))


@router.get("/browse/{kind}")
async def browse_page(
    request: Request,
    kind: str,
    session: SessionDep,
    runtime: RuntimeDep,
    q: Annotated[str, Query(max_length=200)] = "",
    cursor: Annotated[str | None, Query()] = None,
) -> Response:
    signed_in = current_session(request)
    if signed_in is None:
        return _login_redirect()
    try:
        listed = kind_of(kind)
        filters = ListFilters(id_prefix=q.strip() or None)
        page = await list_page(
            session=session, counters=runtime.counters, route=listed.route, filters=filters, limit=50, cursor=cursor
        )
    except SpendgateError as exc:
        return _error_page(request, signed_in, exc)
    template = "browse_rows.html" if request.headers.get("hx-request") else "browse.html"
    return render(template, **_base(request, signed_in, kind=listed, page=page, q=q, title=f"{listed.label}s"))


async def entity_response(
    request: Request,
    signed_in: Session,
    *,
    session: Any,
    runtime: Runtime,
    kind_name: str,
    entity_id: str,
    error: SpendgateError | None = None,
    done: str | None = None,
) -> Response:
    """The entity page, optionally with an error a change just hit (answered with its status)."""
    kind = kind_of(kind_name)
    view = await read_view(session=session, runtime=runtime, kind=kind, entity_id=entity_id)
    extras = await entity_extras(session=session, runtime=runtime, kind=kind, entity_id=entity_id)
    return render(
        "entity.html",
        status_code=error.status if error is not None else 200,
        **_base(
            request, signed_in, kind=kind, view=view, bars=bars(view.ledgers), extras=extras, error=error, done=done,
            chart_days=CHART_DAYS, title=f"{kind.label} {entity_id}",
            model_bars={model: bars(ledgers) for model, ledgers in getattr(view, "model_ledgers", {}).items()},
        ),
    )


@router.get("/e/{kind}/{entity_id:path}")
async def entity_page(
    request: Request,
    kind: str,
    entity_id: str,
    session: SessionDep,
    runtime: RuntimeDep,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    signed_in = current_session(request)
    if signed_in is None:
        return _login_redirect()
    try:
        return await entity_response(
            request, signed_in, session=session, runtime=runtime, kind_name=kind, entity_id=entity_id, done=done
        )
    except SpendgateError as exc:
        return _error_page(request, signed_in, exc)


@router.get("/requests")
async def request_page(
    request: Request, session: SessionDep, id: Annotated[str, Query(min_length=1, max_length=500)]
) -> Response:
    signed_in = current_session(request)
    if signed_in is None:
        return _login_redirect()
    found = await request_detail(session=session, request_id=id)
    template = "request_detail.html" if request.headers.get("hx-request") else "request.html"
    return render(template, status_code=200 if found else 404,
                  **_base(request, signed_in, request_id=id, event=found, title=f"Request {id}"))


def _policy_data(root: Path) -> list[tuple[str, str]]:
    """Every data.json under the policy directory, pretty-printed (the knobs policies read)."""
    shown = []
    for path in sorted(root.rglob("data.json")):
        try:
            text = path.read_bytes()[:_DATA_SHOWN].decode("utf-8", errors="replace")
        except OSError as exc:
            text = f"(cannot be read: {exc.strerror})"
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass  # shown as it is: the policy loader reports what is wrong with it
        shown.append((str(path.relative_to(root)), text))
    return shown


@router.get("/policy")
async def policy_page(request: Request, runtime: RuntimeDep) -> Response:
    signed_in = current_session(request)
    if signed_in is None:
        return _login_redirect()
    reloader: PolicyReloader | None = getattr(request.app.state, "policy_reloader", None)
    return render(
        "policy.html",
        **_base(
            request, signed_in, title="Policy",
            revision=runtime.policy.revision,
            loaded_at=reloader.loaded_at if reloader else None,
            rejected=reloader.rejected if reloader else None,
            reload_seconds=runtime.settings.policy_reload_seconds,
            policy_dir=str(runtime.settings.policy_dir),
            data_files=_policy_data(Path(runtime.settings.policy_dir)),
        ),
    )
