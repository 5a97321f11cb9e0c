"""GET /metrics — the Prometheus text exposition of this replica's metrics.

Open by default, as Prometheus scrapers usually carry no token (the metrics hold no secret
and no per-key label); `SPENDGATE_METRICS_ACCESS=admin` requires the admin token, `off` hides
the route.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..errors import NotFound
from ..metrics import CONTENT_TYPE
from .auth import require_admin
from .deps import RuntimeDep

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    access = runtime.settings.metrics_access
    if access == "off":
        raise NotFound(kind="route", id="/metrics", hint="metrics are off (SPENDGATE_METRICS_ACCESS)")
    if access == "admin":
        await require_admin(request)
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)
