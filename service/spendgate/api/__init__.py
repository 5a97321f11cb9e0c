"""HTTP layer: thin routers over the service modules."""

from .app import create_app

__all__ = ["create_app"]
