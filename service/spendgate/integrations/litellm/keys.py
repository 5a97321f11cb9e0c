"""Spendgate key secrets seen by `custom_auth`, found again by the pre-call hook.

LiteLLM replaces the key on the `UserAPIKeyAuth` that `custom_auth` returns with its SHA-256
(`token`), before the pre-call hook sees it — and authorize needs the secret. SHA-256 hex is
also how Spendgate itself indexes keys (`spendgate.keys.hash_secret`), so this store maps that
hash back to the secret, in this process's memory only (where LiteLLM holds the secret anyway),
bounded so a flood of distinct keys cannot grow it without limit.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

from ...keys import hash_secret

__all__ = ["KeyStore", "SPENDGATE_KEY_PREFIX"]

#: What every Spendgate key secret starts with (spendgate.keys).
SPENDGATE_KEY_PREFIX = "sk-sg-"


class KeyStore:
    """The most recently used `capacity` secrets, by hash (least recently used dropped first)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._secrets: OrderedDict[str, str] = OrderedDict()
        self._lock = Lock()

    def __repr__(self) -> str:  # never the secrets
        return f"KeyStore({len(self._secrets)} keys)"

    def remember(self, secret: str) -> str:
        """Keep `secret`; returns its hash (LiteLLM's `token` for it)."""
        digest = hash_secret(secret)
        with self._lock:
            self._secrets[digest] = secret
            self._secrets.move_to_end(digest)
            while len(self._secrets) > self._capacity:
                self._secrets.popitem(last=False)
        return digest

    def secret(self, digest: str | None) -> str | None:
        if digest is None:
            return None
        with self._lock:
            found = self._secrets.get(digest)
            if found is not None:
                self._secrets.move_to_end(digest)
            return found
