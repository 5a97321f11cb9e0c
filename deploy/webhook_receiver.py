#!/usr/bin/env python3
"""A small Spendgate alert webhook receiver, for people and tests (stdlib only).

It verifies each POST's `X-Spendgate-Signature: sha256=<hex HMAC-SHA256 of the raw body>` with the
shared secret, prints each event as one line, and dedupes by event id (deliveries are at least
once: the same id may arrive twice, it is printed once). For demos it can answer 500 to the first
N deliveries, or hang on them.

    SPENDGATE_ALERT_WEBHOOK_SECRET=… python deploy/webhook_receiver.py --port 9000
    python deploy/webhook_receiver.py --port 9000 --fail 2        # 500, 500, then 200
    python deploy/webhook_receiver.py --port 9000 --hang 1        # never answers the first one

Point Spendgate at it: SPENDGATE_ALERT_WEBHOOK_URLS=http://127.0.0.1:9000/
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

__all__ = ["Receiver", "verify", "main"]


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is `sha256=` + the hex HMAC-SHA256 of `body` under `secret`."""
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(expected, header)


def describe(event: dict[str, Any]) -> str:
    """One line for a person: what happened, to whom, the figures, the event id."""
    entity = event.get("entity") or {}
    extra = ""
    if event.get("threshold") is not None:
        extra += f" threshold={event['threshold']}%"
    if event.get("soft_budget") is not None:
        extra += f" soft_budget={event['soft_budget']}"
    if event.get("request_id"):
        extra += f" request_id={event['request_id']}"
    return (
        f"{event.get('at')} {event.get('event')} {entity.get('type')}:{entity.get('id')} "
        f"window={event.get('window')} spent={event.get('spent')} limit={event.get('limit')}{extra} "
        f"resets_at={event.get('resets_at')} id={event.get('id')}"
    )


@dataclass
class Receiver:
    """The server; `start()` serves in a thread (tests), `serve_forever()` in the foreground (people)."""

    secret: bytes | None
    host: str = "127.0.0.1"
    port: int = 0
    fail: int = 0
    hang: int = 0
    out: TextIO = sys.stdout
    #: Every POST that arrived, verified or not, answered or not (in arrival order).
    arrivals: list[dict[str, Any]] = field(default_factory=list)
    #: Events answered 200, once per id.
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    rejected: int = 0
    hanging: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer((self.host, self.port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self.out, flush=True)

    def _handle(self, body: bytes, signature: str | None) -> int:
        """The status to answer (0: hang until released)."""
        try:
            event = json.loads(body)
        except ValueError:
            event = {}
        signed = self.secret is None or verify(self.secret, body, signature)
        with self._lock:
            self.arrivals.append({"event": event, "verified": signed})
            number = len(self.arrivals)
            if not signed:
                self.rejected += 1
        if not signed:
            self._print(f"rejected: bad signature on event {event.get('id')}")
            return 401
        if number <= self.fail:
            self._print(f"answering 500 to event {event.get('id')} (--fail)")
            return 500
        if number <= self.fail + self.hang:
            with self._lock:
                self.hanging += 1
            self._print(f"hanging on event {event.get('id')} (--hang)")
            return 0
        with self._lock:
            duplicate = event.get("id") in self.accepted
            if duplicate:
                self.duplicates += 1
            else:
                self.accepted[str(event.get("id"))] = event
        self._print(f"duplicate id={event.get('id')} (already seen)" if duplicate else describe(event))
        return 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 — http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = receiver._handle(body, self.headers.get("x-spendgate-signature"))
                if status == 0:
                    receiver._release.wait()
                    return  # the connection closes without an answer
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — quiet
                return

        return Handler

    def start(self) -> Receiver:
        threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True).start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", help="the shared secret (default: $SPENDGATE_ALERT_WEBHOOK_SECRET)")
    parser.add_argument("--fail", type=int, default=0, metavar="N", help="answer 500 to the first N deliveries")
    parser.add_argument("--hang", type=int, default=0, metavar="N", help="never answer the N deliveries after those")
    args = parser.parse_args(argv)
    secret = args.secret or os.environ.get("SPENDGATE_ALERT_WEBHOOK_SECRET")
    receiver = Receiver(secret.encode() if secret else None, args.host, args.port, args.fail, args.hang)
    print(f"listening on {receiver.url} ({'verifying signatures' if secret else 'NOT verifying signatures'})",
          flush=True)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
