"""An OPA-compatible HTTP server for tests, evaluating with OPA's own Go engine.

The engine is OPA's `github.com/open-policy-agent/opa/v1/rego` package (module `opa_bindings`,
requirements/opa-engine.txt), so the OPA adapter is tested against real OPA semantics: its parser,
compiler and type checker on every PUT, its evaluation on every query. Only the HTTP layer is ours.

It serves the part of OPA's REST API (openpolicyagent.org/docs/rest-api) that spendgate.policy.opa
uses, with OPA's routes, status codes and bodies (as OPA's v1/server/server.go writes them):

    GET    /health                  200 {}
    any    <path>/                  301 to <path> (OPA's TrailingSlashRedirectHandler); HEAD: 405
    GET    /v1/policies             200 {"result": [{"id", "raw", "ast"}]}
    GET    /v1/policies/{id}        200 {"result": {...}} | 404 resource_not_found
    PUT    /v1/policies/{id}        200 {} (also when unchanged) | 400 invalid_parameter
                                    "error(s) occurred while compiling module(s)", errors [{code, message, location}]
                                    (OPA's rego_parse_error, rego_type_error, rego_compile_error, ...)
    DELETE /v1/policies/{id}        200 {} | 404 resource_not_found | 400 invalid_operation
    GET    /v1/data/{path}          200 {"result": ...}, or {} when undefined (?input= as JSON)
    POST   /v1/data/{path}          {"input": ...} -> 200 {"result": ...} | {} (+ "warning" without input);
                                    500 internal_error "error(s) occurred while evaluating query" with eval_* errors
    PUT    /v1/data/{path}          204 (parents created; If-None-Match: * on an existing document: 304)
    PATCH  /v1/data/{path}          JSON Patch add/remove/replace -> 204 | 400 | 404
    DELETE /v1/data/{path}          204 | 404 resource_not_found

Known differences from OPA, so tests don't rely on them: error locations carry no column (the Go
engine's messages give `file:row` only); a data write is not checked against the rules (a conflict
shows at the next query, as OPA's 400 compile error); no bundles, metrics, explain or decision logs.

It runs in a process of its own, as an OPA sidecar does, so going down and restarting are real.
`OpaCompatServer` starts it and works its failure knobs through a second, control port:
`fail_with(status)`, `hang(seconds)`, `heal()`, `go_down()` / `come_back()` (same port, same state),
`restart()` (OPA keeps pushed policies and data in memory only: a restart loses them), `reset()`;
`stats()` counts the decision queries it answered (`data_queries`: GET or POST on /v1/data).
By hand: `python tests/support/opa_compat.py --port 8181 [--control-port 8182]`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import socket
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

__all__ = ["OpaCompatApp", "OpaCompatServer"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: One error in the Go engine's messages: `file:row: code: message` (Error() of OPA's ast.Error).
_GO_ERROR = re.compile(r"(?P<file>[^\s:][^:\n]*):(?P<row>\d+): (?P<code>[a-z_]+_error): (?P<message>[^\n]*)")
_PACKAGE = re.compile(r"^[ \t]*package[ \t]+([A-Za-z_][A-Za-z0-9_.]*)", re.MULTILINE)
_MISSING = object()


def _error(status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status)


def _engine_errors(exc: Any, code: str) -> list[dict[str, Any]]:
    """The Go engine's error (opa_bindings.OpaError) as OPA's detailed errors: [{"code", "message", "location"}]."""
    found = [
        {"code": m["code"], "message": m["message"].strip(), "location": {"file": m["file"], "row": int(m["row"])}}
        for m in _GO_ERROR.finditer(str(exc.message))
    ]
    return found or [{"code": code, "message": str(exc.message)}]


def _opa_bindings() -> Any:
    import opa_bindings  # here, not at the top: only the server process needs it

    return opa_bindings


def _query(path: list[str]) -> str:
    return "data" + "".join(f".{p}" if _IDENT.match(p) else f"[{json.dumps(p)}]" for p in path)


def _split(path: str) -> list[str]:
    return [part for part in path.strip("/").split("/") if part]


def _lookup(doc: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


class OpaCompatApp:
    """The OPA API as an ASGI app: its state (modules, data) and its failure knobs."""

    def __init__(self) -> None:
        self.policies: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        #: (method, path) of every request, for tests that assert what the adapter sent.
        self.requests: list[tuple[str, str]] = []
        #: Decision queries answered (GET or POST on /v1/data), for tests that assert OPA was asked.
        self.data_queries = 0
        #: Bumped on every change of policies or data; the compiled engine records the one it was built at.
        self._state = 0
        self._engine: tuple[int, Any] | None = None
        self._fail: tuple[int, str, bytes] | None = None
        self._hang: tuple[float, str] | None = None
        self._generation = 0
        self._router = Router(
            routes=[
                Route("/health", self._health, methods=["GET"]),
                Route("/v1/policies", self._list_policies, methods=["GET"]),
                Route("/v1/policies/{id:path}", self._policy, methods=["GET", "PUT", "DELETE"]),
                Route("/v1/data", self._data, methods=["GET", "POST", "PUT", "PATCH"]),
                Route("/v1/data/{path:path}", self._data, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ]
        )

    def fail_with(self, status: int, path_prefix: str = "/", body: bytes | None = None) -> None:
        default = json.dumps({"code": "internal_error", "message": "injected failure (opa_compat)"}).encode()
        self._fail = (status, path_prefix, default if body is None else body)

    def hang(self, seconds: float, path_prefix: str = "/") -> None:
        self._hang = (seconds, path_prefix)

    def heal(self) -> None:
        self._fail, self._hang = None, None
        self._generation += 1

    def forget(self) -> None:
        self.policies, self.data, self._state = {}, {}, self._state + 1
        self._use(None)
        self.requests.clear()
        self.data_queries = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        self.requests.append((scope["method"], path))
        if (hang := self._hang) and path.startswith(hang[1]):
            generation, loop = self._generation, asyncio.get_running_loop()
            until = loop.time() + hang[0]
            while loop.time() < until and generation == self._generation:
                await asyncio.sleep(0.01)
        if (fail := self._fail) and path.startswith(fail[1]):
            kind = "application/json" if fail[2].startswith(b"{") else "text/plain"
            await Response(fail[2], status_code=fail[0], media_type=kind)(scope, receive, send)
            return
        if scope["method"] == "HEAD":  # OPA's handlers.DefaultHandler
            await Response(status_code=405)(scope, receive, send)
            return
        if path != "/" and path.endswith("/"):  # OPA redirects a trailing slash away (301)
            query = scope.get("query_string", b"").decode()
            location = path.rstrip("/") + (f"?{query}" if query else "")
            await Response(status_code=301, headers={"Location": location})(scope, receive, send)
            return
        try:
            await self._router(scope, receive, send)
        except ClientDisconnect:  # the client gave up (e.g. timed out on a hang): nobody to answer
            return

    async def _health(self, request: Request) -> Response:
        return JSONResponse({})

    async def _list_policies(self, request: Request) -> Response:
        result = [self._policy_doc(pid, raw) for pid, raw in self.policies.items()]
        return JSONResponse({"result": result})

    async def _policy(self, request: Request) -> Response:
        pid = request.path_params["id"]
        if request.method == "PUT":
            raw = (await request.body()).decode("utf-8", errors="replace")
            if self.policies.get(pid) == raw:
                return JSONResponse({})
            modules = {**self.policies, pid: raw}
            if isinstance(failed := self._compile(modules, self.data), Response):
                return failed
            self._state += 1
            self.policies = modules
            self._use(failed)
            return JSONResponse({})
        if pid not in self.policies:
            return _error(404, "resource_not_found", f'storage_not_found_error: policy id "{pid}"')
        if request.method == "GET":
            return JSONResponse({"result": self._policy_doc(pid, self.policies[pid])})
        modules = {k: v for k, v in self.policies.items() if k != pid}
        if isinstance(failed := self._compile(modules, self.data, code="invalid_operation"), Response):
            return failed
        self._state += 1
        self.policies = modules
        self._use(failed)
        return JSONResponse({})

    async def _data(self, request: Request) -> Response:
        path = _split(request.path_params.get("path", ""))
        if request.method in ("GET", "POST"):
            return await self._evaluate(request, path)
        body = await request.body()
        try:
            value = json.loads(body) if body or request.method != "DELETE" else None
        except ValueError as exc:
            return _error(400, "invalid_parameter", str(exc))
        data = copy.deepcopy(self.data)
        current = _lookup(data, path)
        if request.method == "PUT":
            if current is not _MISSING and request.headers.get("if-none-match") == "*":
                return Response(status_code=304)
            failure = self._write(data, path, value)
        elif current is _MISSING:
            where = "/" + "/".join(path)
            return _error(404, "resource_not_found", f"storage_not_found_error: {where}: document missing")
        elif request.method == "DELETE":
            failure = self._write(data, path, _MISSING)
        else:
            failure = self._patch(data, path, value)
        if failure is not None:
            return failure
        self.data, self._state = data, self._state + 1
        return Response(status_code=204)

    async def _evaluate(self, request: Request, path: list[str]) -> Response:
        extra: dict[str, Any] = {}
        try:
            if request.method == "POST":
                body = await request.body()
                document = json.loads(body) if body.strip() else {}
                if not isinstance(document, dict):
                    raise ValueError("the request body must be a JSON object")
            else:
                given = request.query_params.get("input")
                document = {"input": json.loads(given)} if given is not None else {}
        except ValueError as exc:
            return _error(400, "invalid_parameter", f"error(s) occurred while decoding request: {exc}")
        if "input" not in document and request.method == "POST":
            extra["warning"] = {"code": "api_usage_warning", "message": "'input' key missing from the request"}
        if self._engine is None or self._engine[0] != self._state:
            compiled = self._compile(self.policies, self.data)
            if isinstance(compiled, Response):
                return compiled
            self._use(compiled)
        assert self._engine is not None
        self.data_queries += 1
        try:
            # No "input" key: no input at all (None), not the previous request's.
            rows = self._engine[1].eval_query(f"result := {_query(path)}", input=document.get("input"))
        except _opa_bindings().OpaError as exc:
            errors = _engine_errors(exc, "eval_internal_error")
            return _error(500, "internal_error", "error(s) occurred while evaluating query", errors)
        if rows:
            return JSONResponse({"result": rows[0]["result"], **extra})
        return JSONResponse(extra)

    # -- helpers ----------------------------------------------------------------------------------

    def _compile(self, modules: dict[str, str], data: dict[str, Any], *, code: str = "invalid_parameter") -> Any:
        """An OPA engine holding `modules` and `data`, compiled (parsed, type-checked) as OPA does on every
        policy PUT; OPA's 400 with its errors if they do not compile."""
        bindings = _opa_bindings()
        engine = bindings.OpaEngine()
        try:
            for pid, raw in modules.items():
                engine.add_policy(pid, raw)
            engine.add_data(data)
            engine.eval_query("true")  # compiles every module: parse, type and conflict errors surface here
        except bindings.OpaError as exc:
            engine.close()
            errors = _engine_errors(exc, "rego_compile_error")
            return _error(400, code, "error(s) occurred while compiling module(s)", errors)
        return engine

    def _use(self, engine: Any) -> None:
        """Evaluate with `engine` (compiled at the current state) from now on; the previous one is closed."""
        if self._engine is not None:
            self._engine[1].close()
        self._engine = None if engine is None else (self._state, engine)

    @staticmethod
    def _policy_doc(pid: str, raw: str) -> dict[str, Any]:
        package = match[1].split(".") if (match := _PACKAGE.search(raw)) else []
        path = [{"type": "var", "value": "data"}] + [{"type": "string", "value": p} for p in package]
        return {"id": pid, "raw": raw, "ast": {"package": {"path": path}}}

    @staticmethod
    def _write(data: dict[str, Any], path: list[str], value: Any) -> Response | None:
        """Set (or, with _MISSING, remove) the document at `path`, creating parent objects as OPA does."""
        if not path:
            if not isinstance(value, dict):
                return _error(400, "invalid_parameter", "the root document must be an object")
            data.clear()
            data.update(value)
            return None
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                return _error(400, "invalid_parameter", f"storage_write_conflict_error: {'/'.join(path)}")
            node = child
        if value is _MISSING:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
        return None

    def _patch(self, data: dict[str, Any], path: list[str], ops: Any) -> Response | None:
        if not isinstance(ops, list):
            return _error(400, "invalid_parameter", "a JSON Patch document must be an array of operations")
        for op in ops:
            if not isinstance(op, dict) or op.get("op") not in ("add", "remove", "replace"):
                return _error(400, "invalid_parameter", f"unsupported patch operation {op!r}")
            target = path + _split(str(op.get("path", "")))
            exists = _lookup(data, target) is not _MISSING
            if op["op"] != "add" and not exists:
                where = "/" + "/".join(target)
                return _error(404, "resource_not_found", f"storage_not_found_error: {where}: document missing")
            if op["op"] == "add" and _lookup(data, target[:-1]) is _MISSING:
                return _error(404, "resource_not_found", "storage_not_found_error: parent document missing")
            value = _MISSING if op["op"] == "remove" else op.get("value")
            if (failure := self._write(data, target, value)) is not None:
                return failure
        return None


# -- the process: the OPA port and a control port ---------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say so, and
    # with Nagle on, a response written as headers then body waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app, interface="asgi3", lifespan="off", ws="none", log_config=None, log_level="warning",
        access_log=False, timeout_graceful_shutdown=1,
    )


class _Listener(uvicorn.Server):
    """The OPA port, which goes down and comes back inside the process (its state survives)."""

    def __init__(self, app: OpaCompatApp, host: str, port: int) -> None:
        super().__init__(_config(app))
        self.app, self.host, self.port = app, host, port
        self.task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the control server owns the process's signals
        yield

    async def up(self) -> None:
        if self.task is not None:
            return
        self.should_exit, self.started = False, False
        self.task = asyncio.create_task(self.serve(sockets=[_bind(self.host, self.port)]))
        while not self.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.005)

    async def down(self) -> None:
        if self.task is None:
            return
        self.app.heal()
        self.should_exit = True
        await self.task
        self.task = None


def _control(app: OpaCompatApp, listener: _Listener) -> Router:
    async def knob(request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        action = request.path_params["action"]
        if action == "fail":
            app.fail_with(body["status"], body.get("path_prefix", "/"),
                          body["body"].encode() if body.get("body") is not None else None)
        elif action == "hang":
            app.hang(body["seconds"], body.get("path_prefix", "/"))
        elif action == "heal":
            app.heal()
        elif action == "down":
            await listener.down()
        elif action == "up":
            await listener.up()
        elif action == "restart":
            await listener.down()
            app.forget()
            await listener.up()
        elif action == "reset":
            app.heal()
            app.forget()
            await listener.up()
        else:
            return JSONResponse({"error": f"no knob {action!r}"}, status_code=404)
        return JSONResponse({})

    async def state(request: Request) -> Response:
        return JSONResponse({"policies": app.policies, "data": app.data, "requests": app.requests})

    async def stats(request: Request) -> Response:
        return JSONResponse({"data_queries": app.data_queries})

    return Router(routes=[
        Route("/state", state, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/{action}", knob, methods=["POST"]),
    ])


async def serve(host: str, port: int, control_port: int) -> None:
    app = OpaCompatApp()
    listener = _Listener(app, host, port)
    await listener.up()
    try:
        await uvicorn.Server(_config(_control(app, listener))).serve(sockets=[_bind(host, control_port)])
    finally:
        await listener.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8181)
    parser.add_argument("--control-port", type=int, default=0, help="default: --port + 1")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.control_port or args.port + 1))


# -- the test side ------------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class OpaCompatServer:
    """Starts the server in a process of its own and works its knobs (blocking calls, a few ms each)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.control_port = host, _free_port(host), _free_port(host)
        self.process: subprocess.Popen[bytes] | None = None
        self._control = httpx.Client(base_url=f"http://{host}:{self.control_port}", timeout=30)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        from support.opa_go import require_opa_bindings

        require_opa_bindings()  # missing: fail, naming the install command (the server could only die)
        command = [sys.executable, __file__, "--host", self.host, "--port", str(self.port),
                   "--control-port", str(self.control_port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self._control.get("/state").raise_for_status()
                return
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the OPA-compatible server did not start on {self.url}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self._control.close()

    def _knob(self, action: str, **body: Any) -> None:
        self._control.post(f"/{action}", json=body).raise_for_status()

    def fail_with(self, status: int = 500, *, path_prefix: str = "/", body: bytes | None = None) -> None:
        """Answer every request under `path_prefix` with `status` (OPA's error JSON unless `body`)."""
        self._knob("fail", status=status, path_prefix=path_prefix, body=None if body is None else body.decode())

    def hang(self, seconds: float, *, path_prefix: str = "/") -> None:
        """Hold every request under `path_prefix` for `seconds` before answering it."""
        self._knob("hang", seconds=seconds, path_prefix=path_prefix)

    def heal(self) -> None:
        """No failures, no hanging (held requests are let go)."""
        self._knob("heal")

    def go_down(self) -> None:
        """Stop listening (connections are closed); the state is kept."""
        self._knob("down")

    def come_back(self) -> None:
        self._knob("up")

    def restart(self) -> None:
        """Down and up again, losing every pushed policy and data document, as OPA does."""
        self._knob("restart")

    def reset(self) -> None:
        """A fresh, healthy, listening OPA with no policies and no data."""
        self._knob("reset")

    def stats(self) -> dict[str, int]:
        """{"data_queries": n}: the queries on /v1/data it evaluated since it was started, restarted or reset."""
        response = self._control.get("/stats")
        response.raise_for_status()
        return {name: int(value) for name, value in response.json().items()}

    @property
    def data_queries(self) -> int:
        return self.stats()["data_queries"]

    def state(self) -> dict[str, Any]:
        response = self._control.get("/state")
        response.raise_for_status()
        return dict(response.json())

    @property
    def policies(self) -> dict[str, str]:
        return dict(self.state()["policies"])


if __name__ == "__main__":
    main()
