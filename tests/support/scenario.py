"""Build the entities of a test through the admin API, as an operator would."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["create", "create_key", "authorize", "record", "ledger", "charged_entities"]


async def create(admin: httpx.AsyncClient, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await admin.post(f"/v1/admin/{kind}", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def create_key(admin: httpx.AsyncClient, **body: Any) -> str:
    """Create a key; returns its secret."""
    return str((await create(admin, "keys", body))["key"])


async def authorize(gateway: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await gateway.post("/v1/authorize", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def record(gateway: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await gateway.post("/v1/record", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def ledger(admin: httpx.AsyncClient, path: str, window: str | None = None) -> dict[str, Any]:
    """The current ledger of an entity (`path` like "users/u1"), for one window."""
    response = await admin.get(f"/v1/admin/{path}")
    assert response.status_code == 200, response.text
    ledgers = [item for item in response.json()["ledgers"] if item["window"] == window]
    assert len(ledgers) == 1, response.json()["ledgers"]
    return ledgers[0]  # type: ignore[no-any-return]


def charged_entities(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["entity"]["type"], c["entity"]["id"]) for c in body["charges"]}
