"""/v1/reports/... (docs/api.md "Reports") — read-only views for the console, admin token.

`GET /v1/reports/spend` sums the spend rollups the record transaction writes
(`spendgate.reports`); other reports join this router.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ..errors import InvalidRequest
from ..reports.query import parse_query, spend_report
from ..reports.render import report_csv, report_json
from .auth import require_admin
from .deps import RuntimeDep, SessionDep
from .responses import error_responses

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/reports", tags=["reports"], dependencies=[Depends(require_admin)], responses=error_responses(401, 422, 503)
)


class SpendTotals(BaseModel):
    spend: str = Field(examples=["0.500000"], description="USD, exact decimal string")
    requests: int
    failures: int


class SpendReportResponse(BaseModel):
    from_: str = Field(alias="from", examples=["2026-10-29T13:00:00Z"])
    to: str = Field(examples=["2026-11-28T13:00:00Z"])
    group_by: list[str] = Field(examples=[["model", "day"]])
    rows: list[dict[str, Any]] = Field(
        description="one per group: a label per group_by name, then spend, requests, failures",
        examples=[[{"model": "gpt-4o", "day": "2026-11-28", "spend": "0.500000", "requests": 2, "failures": 0}]],
    )
    total: SpendTotals


_Text = Annotated[str | None, Query()]
_SPEND: dict[int | str, dict[str, Any]] = {
    200: {
        "model": SpendReportResponse,
        "description": "the report (JSON), or with format=csv a text/csv stream with a header row",
        "content": {"text/csv": {}},
    }
}


@router.get("/spend", response_model=None, responses=_SPEND)
async def spend_report_route(
    runtime: RuntimeDep,
    session: SessionDep,
    from_: Annotated[str | None, Query(alias="from", description="UTC whole hour or date; default to - 30 days")] = None,
    to: Annotated[str | None, Query(description="UTC whole hour or date (exclusive); default the next hour")] = None,
    group_by: Annotated[str | None, Query(description="comma list of entity, model, key, outcome, and one of "
                                          "hour, day, week, month")] = None,
    entity: Annotated[str | None, Query(description="TYPE:ID, e.g. team:search")] = None,
    key: _Text = None,
    model: _Text = None,
    tag: _Text = None,
    end_user: _Text = None,
    format: Annotated[str, Query(description="json or csv")] = "json",
) -> Response:
    if format not in ("json", "csv"):
        raise InvalidRequest(field="format", problem=f"{format!r} is not json or csv")
    params = {"from": from_, "to": to, "group_by": group_by, "entity": entity, "key": key, "model": model,
              "tag": tag, "end_user": end_user}
    report = await spend_report(session, parse_query(params, now=runtime.clock()))
    if format == "csv":
        return StreamingResponse(
            report_csv(report), media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="spend.csv"'},
        )
    body = json.dumps(report_json(report), ensure_ascii=False, separators=(",", ":"))
    return Response(body.encode(), media_type="application/json")
