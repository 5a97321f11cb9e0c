"""FastAPI dependencies, declared once and imported by every router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from ..runtime import Runtime

__all__ = ["RuntimeDep", "SessionDep"]


async def _runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs a sync dependency in a thread pool, on every request.
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


async def _session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]
