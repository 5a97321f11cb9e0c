"""GET /healthz (process up) and GET /readyz (every dependency reachable, policies loaded)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ..errors import SpendgateError, error_body
from .deps import RuntimeDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(runtime: RuntimeDep) -> dict[str, Any] | JSONResponse:
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
    return {"status": "ready", "checks": checks, "policy_revision": runtime.policy.revision}
