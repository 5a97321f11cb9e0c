"""A started Spendgate app and its clients, as the `app_factory` fixture (conftest.py) yields them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from spendgate.runtime import Runtime
from spendgate.settings import Settings

__all__ = ["ADMIN_TOKEN", "GATEWAY_TOKEN", "RunningApp", "AppFactory"]

ADMIN_TOKEN = "test-admin-token-0123456789"
GATEWAY_TOKEN = "test-gateway-token-0123456789"


@dataclass
class RunningApp:
    """A started app (lifespan entered) and clients for it: admin token, gateway token, no token."""

    app: FastAPI
    settings: Settings
    admin: httpx.AsyncClient
    gateway: httpx.AsyncClient
    anonymous: httpx.AsyncClient

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime  # type: ignore[no-any-return]


#: `await app_factory(database_url=…, redis_url=…, **settings)` → RunningApp.
AppFactory = Callable[..., Awaitable[RunningApp]]
