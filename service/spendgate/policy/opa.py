"""The OPA adapter: the decision asked of an OPA server over its REST API (opa-python-client, async).

Start-up (`start()`, or lazily on first use) pushes the service's own policy set, so OPA evaluates
exactly the modules and data the embedded engine would:

- each module with the Policy API, `PUT /v1/policies/spendgate/<module path>`; modules under the
  `spendgate/` id prefix that the set no longer has are deleted;
- the data document with the Data API, one `PUT /v1/data/<path>` per subtree the set defines
  (`spendgate/config` for the shipped set), never a wider path: data other tools keep in OPA stays.

`decide` POSTs `{"input": ...}` to `/v1/data/spendgate/decision/result` and passes `result` (absent:
undefined) through `decision_from_result`, so an undefined or malformed result is a denial. `price`
does the same with `/v1/data/spendgate/pricing/result` and `quote_from_result` (malformed: PolicyError).

Errors. OPA unreachable, silent for `timeout_seconds` or answering 5xx: `Unavailable("opa", ...)`
(503). OPA refusing the set (a 4xx on a push: a module that does not compile, data that conflicts
with a rule): `PolicyError` with OPA's messages. An evaluation error (OPA's 500 carrying `eval_*`
errors, e.g. conflicting rule values): `PolicyError`, as the embedded engine raises.

Consistency. OPA compiles the whole module set on every PUT and has no multi-module transaction, so
a push is a sequence of writes. Within this process it is atomic all the same: decisions wait (at
most `timeout_seconds`) while a push runs, and a push waits for decisions in flight. A set OPA
refuses is undone by pushing the previous one again. OPA keeps pushed policies in memory only; after
an OPA restart the decision comes back undefined, and the adapter checks, pushes again and asks once
more. Several services with *different* policy sets must not share one OPA (their pushes would
overwrite each other; `is_ready` reports a foreign module as not ready).

Fail-open. A blanket "allow while OPA is down" is not offered: the policy is what names the ledgers
a request charges, so without it the service could neither check budgets nor reserve on, and later
charge, the right ledgers (DESIGN.md invariant 1): an allow without charges is spend nobody pays
for, and one with guessed charges re-implements the policy in Python. `fail_open=True` therefore
means *fail over*: while OPA is unavailable, the same policy set is evaluated in-process by the
embedded engine (compiled at construction, so a set it cannot run fails start-up, not an outage).
Both adapters pass one contract suite (tests/test_policy_engines_contract.py), so the decision,
charges included, is the one OPA would have given; what the outage loses is OPA's decision log.
A `PolicyError` never fails over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from opa_client import AsyncOpaClient
from opa_client.errors import DeleteDataError, DeletePolicyError, PolicyNotFoundError, RegoParseError, TypeException

from ..errors import PolicyError, Unavailable
from .embedded import EmbeddedEngine
from .engine import DECISION_PATH, PRICING_PATH, PolicyDecision, PriceQuote, decision_from_result, quote_from_result
from .loader import PolicySet

__all__ = ["OpaEngine", "POLICY_ID_PREFIX", "policy_id", "data_documents"]

log = logging.getLogger("spendgate.policy.opa")

#: Every module this adapter pushes has an id under this prefix; others' modules are left alone.
POLICY_ID_PREFIX = "spendgate/"
_PACKAGE = re.compile(r"^[ \t]*package[ \t]+([A-Za-z_][A-Za-z0-9_.]*)", re.MULTILINE)
_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, json.JSONDecodeError)
_JSON = {"Content-Type": "application/json"}


def policy_id(module_name: str) -> str:
    """OPA's id for a module of the set: `spendgate/` and its path (`policies/spendgate/lib/lib.rego`)."""
    return POLICY_ID_PREFIX + module_name


def data_documents(policies: PolicySet) -> dict[tuple[str, ...], Any]:
    """The data subtrees to PUT, by path: descend while the path is (a prefix of) a package's, else write there.

    `{"spendgate": {"config": {...}}}` with packages `spendgate.*` is written at `spendgate/config`,
    so the write replaces only what the set defines, never a sibling another tool keeps under `spendgate`.
    """
    packages = {tuple(m.group(1).split(".")) for _, src in policies.modules if (m := _PACKAGE.search(src))}
    documents: dict[tuple[str, ...], Any] = {}

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for key, value in node.items():
            here = (*path, key)
            if isinstance(value, dict) and any(package[: len(here)] == here for package in packages):
                walk(value, here)
            else:
                documents[here] = value

    walk(policies.data, ())
    return documents


def _endpoint(path: tuple[str, ...]) -> str:
    return "/".join(quote(part, safe="") for part in path)


def _opa_message(message: Any, errors: Any) -> str:
    """OPA's error message with its detailed errors (`file:row:col: code: message`)."""
    details = []
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            loc = error.get("location") or {}
            where = f"{loc.get('file', '')}:{loc.get('row', '?')}:{loc.get('col', '?')}: " if loc else ""
            details.append(f"{where}{error.get('code', '')}: {error.get('message', '')}")
    return "; ".join([str(message or "no message"), *details])


class _Gate:
    """Decisions run together; a policy push runs alone and, once it waits, goes before new decisions."""

    def __init__(self) -> None:
        self._push = asyncio.Lock()
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._readers = 0

    @asynccontextmanager
    async def reading(self, timeout: float) -> AsyncIterator[None]:
        if not self._open.is_set():
            try:
                async with asyncio.timeout(timeout):
                    while not self._open.is_set():
                        await self._open.wait()
            except TimeoutError:
                raise Unavailable("opa", f"a policy push has taken over {timeout:g}s") from None
        self._readers += 1  # no await since the check: nothing can have closed the gate in between
        self._idle.clear()
        try:
            yield
        finally:
            self._readers -= 1
            if not self._readers:
                self._idle.set()

    @asynccontextmanager
    async def writing(self, timeout: float | None = None) -> AsyncIterator[None]:
        """Waits for a push under way (at most `timeout`), then for the decisions in flight."""
        try:
            async with asyncio.timeout(timeout):
                await self._push.acquire()
        except TimeoutError:
            raise Unavailable("opa", f"a policy push has taken over {timeout:g}s") from None
        try:
            self._open.clear()
            while self._readers:
                await self._idle.wait()
            yield
        finally:
            self._open.set()
            self._push.release()


class OpaEngine:
    """Evaluates the decision on an OPA server, after pushing the policy set to it."""

    def __init__(
        self, url: str, policies: PolicySet, *, timeout_seconds: float = 2.0, fail_open: bool = False
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
            raise ValueError(f"OPA URL {url!r} must be http(s)://host[:port] with no path, e.g. http://opa:8181")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        https = parts.scheme == "https"
        # retries=0: the client would retry timeouts and 500s with back-off, stretching one decision far
        # past `timeout_seconds`; the one retry that helps (a keep-alive connection OPA closed) is ours.
        self._client = AsyncOpaClient(
            host=host, port=parts.port or (443 if https else 80), ssl=https, retries=0, timeout=timeout_seconds
        )
        self._url = f"{parts.scheme}://{parts.netloc}"
        self._timeout = timeout_seconds
        self._policies = policies
        #: The set OPA holds as far as this process knows; None when unknown (never pushed, a push failed).
        self._installed: PolicySet | None = None
        self._gate = _Gate()
        self._fallback = EmbeddedEngine(policies) if fail_open else None
        self._decision_url = f"{self._client.root_url}/data/{'/'.join(DECISION_PATH)}"
        self._pricing_url = f"{self._client.root_url}/data/{'/'.join(PRICING_PATH)}"

    @property
    def revision(self) -> str:
        return self._policies.revision

    @property
    def evaluator(self) -> str:
        return "opa"

    async def start(self) -> None:
        """Push the policy set: PolicyError if OPA refuses it, Unavailable if OPA cannot be reached."""
        await self._ensure_installed()

    async def close(self) -> None:
        await self._client.close_connection()

    async def decide(self, input_doc: dict[str, Any]) -> PolicyDecision:
        try:
            result, revision = await self._query(self._decision_url, input_doc)
        except Unavailable as exc:
            if self._fallback is None:
                raise
            log.warning("%s; deciding in-process on the same policy set (fail_open)", exc.message)
            return await self._fallback.decide(input_doc)
        return decision_from_result(result, revision=revision)

    async def price(self, input_doc: dict[str, Any]) -> PriceQuote:
        try:
            result, revision = await self._query(self._pricing_url, input_doc)
        except Unavailable as exc:
            if self._fallback is None:
                raise
            log.warning("%s; pricing in-process on the same policy set (fail_open)", exc.message)
            return await self._fallback.price(input_doc)
        return quote_from_result(result, revision=revision)

    async def is_ready(self) -> bool:
        """OPA answers /health and holds this revision's modules (pushed again if OPA lost them)."""
        try:
            await self._session()
            if not await self._client.check_health():
                return self._fallback is not None
            await self._ensure_installed(wait=self._timeout)
            missing, changed = await self._compare_modules(sources=True)
            if missing:
                log.warning("OPA lost %d policy modules (restarted?); pushing them again", len(missing))
                self._installed = None
                await self._ensure_installed(wait=self._timeout)
                missing, changed = await self._compare_modules(sources=True)
            if changed:
                log.error("OPA holds other versions of %s: another service pushes a different set", sorted(changed))
            return not missing and not changed
        except (Unavailable, PolicyError):
            return self._fallback is not None

    async def swap(self, policies: PolicySet) -> None:
        """Push a new set; if OPA refuses it, put the old one back (it keeps serving) and raise PolicyError."""
        fallback = EmbeddedEngine(policies) if self._fallback is not None else None
        async with self._gate.writing():
            try:
                await self._install(policies, previous=self._policies)
            except PolicyError:
                await self._restore(failed=policies)
                raise
            except BaseException:
                self._installed = None  # OPA may hold part of the new set: the next decision pushes the old again
                raise
            self._policies = self._installed = policies
            if fallback is not None:
                self._fallback = fallback

    # -- deciding ---------------------------------------------------------------------------------

    async def _query(self, url: str, input_doc: dict[str, Any]) -> tuple[Any, str]:
        """The document at `url` for the input (None when undefined) and the revision that gave it."""
        payload = json.dumps({"input": input_doc})
        for attempt in (1, 2):
            await self._ensure_installed(wait=self._timeout)
            async with self._gate.reading(self._timeout):
                revision = self._policies.revision
                body = await self._evaluate(url, payload)
            if "result" in body or attempt == 2 or not (await self._compare_modules(sources=False))[0]:
                break
            log.warning("OPA no longer holds policy revision %s (restarted?); pushing it again", revision)
            self._installed = None
        return body.get("result"), revision

    async def _evaluate(self, url: str, payload: str) -> dict[str, Any]:
        # Posted through the client's own aiohttp session, not query_rule(): that one calls
        # raise_for_status() and drops OPA's error body, so an evaluation error (a 500 carrying
        # eval_* errors: a policy bug, PolicyError) could not be told from OPA being in trouble.
        session = await self._session()
        for attempt in (1, 2):
            try:
                async with session.post(url, data=payload, headers=_JSON) as response:
                    status, raw = response.status, await response.read()
                break
            except aiohttp.ServerDisconnectedError as exc:  # a pooled keep-alive connection OPA had closed
                if attempt == 2:
                    raise Unavailable("opa", f"{self._url} closed the connection: {exc}") from exc
            except _NETWORK_ERRORS as exc:
                raise Unavailable("opa", f"{self._url} did not answer the policy query: {self._why(exc)}") from exc
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if status == 200 and isinstance(body, dict):
            return body
        error = body if isinstance(body, dict) else {}
        errors = error.get("errors")
        if status == 500 and isinstance(errors, list) and any(_is_eval_error(e) for e in errors):
            raise PolicyError(f"policy evaluation failed: {_opa_message(error.get('message'), errors)}")
        text = _opa_message(error.get("message"), errors) if error else raw[:200].decode(errors="replace")
        raise Unavailable("opa", f"{self._url} answered the policy query with HTTP {status}: {text}")

    # -- pushing ----------------------------------------------------------------------------------

    async def _ensure_installed(self, *, wait: float | None = None) -> None:
        """Push the current set unless OPA holds it; `wait`: at most so long for another push under way."""
        if self._installed is self._policies:
            return
        async with self._gate.writing(wait):
            if self._installed is self._policies:
                return
            target, self._installed = self._policies, None
            await self._install(target, previous=None)
            self._installed = target

    async def _restore(self, *, failed: PolicySet) -> None:
        try:
            await self._install(self._policies, previous=failed)
            self._installed = self._policies
        except (PolicyError, Unavailable) as exc:
            log.error("could not push revision %s back after OPA refused %s: %s", self.revision, failed.revision, exc)
            self._installed = None

    async def _install(self, target: PolicySet, *, previous: PolicySet | None) -> None:
        """Make OPA hold `target`: its modules, its data subtrees; ours it no longer has removed."""
        modules = {policy_id(name): source for name, source in target.modules}
        documents = data_documents(target)
        await self._session()
        with self._talking("listing policies"):
            ours = {pid for pid in await self._client.get_policies_list() if pid.startswith(POLICY_ID_PREFIX)}
        for path in data_documents(previous).keys() - documents.keys() if previous is not None else ():
            await self._delete_data(path)
        refused = await self._put_modules(modules)
        if refused:
            # Stuck: the new modules clash with ours still in OPA (a renamed function, a rule moved to
            # another file), which no order of PUTs resolves. Take ours out and push into a clean slate.
            await self._delete_modules(ours | modules.keys())
            ours = set()
            refused = await self._put_modules(modules)
            if refused:
                raise PolicyError(f"OPA refused policy revision {target.revision}: " + " | ".join(refused.values()))
        for path, value in documents.items():
            await self._put_data(path, value)
        await self._delete_modules(ours - modules.keys())

    async def _put_modules(self, modules: dict[str, str]) -> dict[str, str]:
        """PUT each module; OPA compiles the whole set each time, so one calling a function of a module
        not pushed yet is refused until that one is in: retry the refused while others get in.
        Returns OPA's message per module it still refuses."""
        pending = modules
        while True:
            refused = {pid: msg for pid, src in pending.items() if (msg := await self._put_module(pid, src))}
            if not refused or len(refused) == len(pending):
                return refused
            pending = {pid: pending[pid] for pid in refused}

    async def _put_module(self, pid: str, source: str) -> str | None:
        try:
            with self._talking(f"pushing policy {pid}"):
                await self._client.update_policy_from_string(source, quote(pid, safe="/"), rego_compat=False)
        except RegoParseError as exc:
            if exc.expression in (None, "internal_error"):
                raise Unavailable("opa", f"pushing policy {pid}: {_opa_message(exc.message, exc.errors)}") from exc
            return f"{pid}: {_opa_message(exc.message, exc.errors)}"
        except TypeException:
            return f"{pid}: the module is empty"
        return None

    async def _delete_modules(self, ids: set[str]) -> None:
        """Delete modules, those others still depend on (OPA: invalid_operation) after the others."""
        pending = set(ids)
        while pending:
            kept = set()
            for pid in sorted(pending):
                try:
                    with self._talking(f"deleting policy {pid}"):
                        await self._client.delete_policy(quote(pid, safe="/"))
                except DeletePolicyError as exc:
                    if exc.expression == "invalid_operation":
                        kept.add(pid)
                    elif exc.expression != "resource_not_found":
                        raise Unavailable("opa", f"deleting policy {pid}: {exc.message}") from exc
            if kept == pending:
                log.warning("OPA keeps policies %s: other modules still depend on them", sorted(kept))
                return
            pending = kept

    async def _put_data(self, path: tuple[str, ...], value: Any) -> None:
        where = "/".join(path)
        try:
            with self._talking(f"writing data {where}"):
                if isinstance(value, dict):
                    await self._client.update_or_create_data(value, _endpoint(path))
                    return
                # update_or_create_data() takes objects only; other JSON values go through its session.
                session = await self._session()
                url = f"{self._client.root_url}/data/{_endpoint(path)}"
                async with session.put(url, data=json.dumps(value), headers=_JSON) as response:
                    if response.status == 204:
                        return
                    error = await response.json(content_type=None)
                    raise RegoParseError(error.get("code"), error.get("message"), error.get("errors"))
        except RegoParseError as exc:
            if exc.expression in (None, "internal_error"):
                raise Unavailable("opa", f"writing data {where}: {exc.message}") from exc
            raise PolicyError(f"OPA refused the data at {where}: {_opa_message(exc.message, exc.errors)}") from exc

    async def _delete_data(self, path: tuple[str, ...]) -> None:
        try:
            with self._talking(f"deleting data {'/'.join(path)}"):
                await self._client.delete_data(_endpoint(path))
        except DeleteDataError as exc:
            if exc.expression == "internal_error":
                raise Unavailable("opa", f"deleting data {'/'.join(path)}: {exc.message}") from exc
            if exc.expression != "resource_not_found":
                raise PolicyError(f"OPA refused to delete the data at {'/'.join(path)}: {exc.message}") from exc

    async def _compare_modules(self, *, sources: bool) -> tuple[set[str], set[str]]:
        """(ids of this revision's modules OPA lacks, ids it holds with another source, when `sources`)."""
        await self._session()
        modules = {policy_id(name): source for name, source in self._policies.modules}
        with self._talking("listing policies"):
            present = set(await self._client.get_policies_list())
        missing, changed = modules.keys() - present, set()
        for pid in sorted(modules.keys() & present) if sources else ():
            try:
                with self._talking(f"reading policy {pid}"):
                    held = await self._client.get_policy(quote(pid, safe="/"))
            except PolicyNotFoundError:
                missing.add(pid)
                continue
            if (held.get("result") or {}).get("raw") != modules[pid]:
                changed.add(pid)
        return missing, changed

    # -- plumbing ---------------------------------------------------------------------------------

    async def _session(self) -> aiohttp.ClientSession:
        """The one long-lived session, opened on first use (aiohttp wants a running loop for it)."""
        session = self._client._session
        if session is None or session.closed:
            await self._client._init_session()
            session = self._client._session
        assert session is not None
        return session

    @contextmanager
    def _talking(self, doing: str) -> Iterator[None]:
        try:
            yield
        except aiohttp.ClientResponseError as exc:
            raise Unavailable("opa", f"{doing}: {self._url} answered HTTP {exc.status}") from exc
        except _NETWORK_ERRORS as exc:
            raise Unavailable("opa", f"{doing}: {self._why(exc)}") from exc

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer from {self._url} within {self._timeout:g}s"
        return str(exc) or type(exc).__name__


def _is_eval_error(error: Any) -> bool:
    code = error.get("code", "") if isinstance(error, dict) else ""
    return isinstance(code, str) and code.startswith("eval_") and code != "eval_cancel_error"
