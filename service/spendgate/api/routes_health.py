"""GET /healthz (process up) and GET /readyz (every dependency reachable, policies loaded).

A rejected policy reload does not make the replica unready: it keeps deciding under the live
revision, so /readyz stays 200 with `"policy": "ok"` and reports the rejection beside it
(`policy_reload`), for operators and the console to see; the metric
`spendgate_policy_reload_rejected` is 1 meanwhile.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ..errors import SpendgateError, error_body
from ..policy.reload import PolicyReloader
from .deps import RuntimeDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request, runtime: RuntimeDep) -> dict[str, Any] | JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 — any failure means "not ready"
        checks["database"] = f"unavailable ({type(exc).__name__})"
    try:
        await runtime.counters.ping()
        checks["counters"] = "ok"
    except SpendgateError as exc:
        checks["counters"] = exc.message
    checks["policy"] = "ok" if await runtime.policy.is_ready() else "unavailable"
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        body = error_body("unavailable", f"not ready: {', '.join(failing)} unavailable")
        body["checks"] = checks
        return JSONResponse(body, status_code=503)
    reloader: PolicyReloader | None = getattr(request.app.state, "policy_reloader", None)
    return {
        "status": "ready",
        "checks": checks,
        "policy_revision": runtime.policy.revision,
        "policy_engine": runtime.policy.evaluator,
        **_policy_reload(reloader),
    }


def _policy_reload(reloader: PolicyReloader | None) -> dict[str, Any]:
    """When the live revision went live, and the newest files' rejection (null while they are live)."""
    if reloader is None:
        return {}
    rejected = reloader.rejected
    return {
        "policy_loaded_at": reloader.loaded_at.isoformat(),
        "policy_reload": None if rejected is None else {
            "state": "rejected",
            "revision": rejected.revision,
            "error": rejected.error,
            "at": rejected.at.isoformat(),
        },
    }
