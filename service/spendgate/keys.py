"""API key secrets: generated once, stored only as a SHA-256 hash, shown only at creation."""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["new_secret", "hash_secret", "display_prefix"]

_PREFIX = "sk-sg-"


def new_secret() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The lookup key of a secret. Secrets are 256-bit random, so an unsalted hash is safe and indexable."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(secret: str) -> str:
    """Enough of the secret to recognise it in a list, never enough to use it."""
    return secret[: len(_PREFIX) + 4] + "…"
