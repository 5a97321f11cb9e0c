"""The web console at /console (docs/console.md): server-rendered pages over the admin services.

`install_console(app)` mounts its pages, its changes and its static files (htmx and uPlot are
vendored under `static/vendor/` with their licenses: no build step, no CDN).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from . import actions, pages
from .auth import PATH

__all__ = ["install_console", "STATIC_DIR", "TEMPLATE_DIR"]

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATE_DIR = Path(__file__).parent / "templates"


def install_console(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount(f"{PATH}/static", StaticFiles(directory=STATIC_DIR), name="console-static")
