"""A real LiteLLM proxy process for the tests and bench: its venv, its config, start and stop.

LiteLLM lives in its own venv, `.venv-litellm` (its pins differ from the service's), with this
package installed there too so the proxy can import `spendgate.integrations.litellm`.
`SPENDGATE_TEST_LITELLM` may name another `litellm` executable.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from support.services import free_port

__all__ = ["INSTALL", "litellm_executable", "LiteLLMProxy", "FakeUpstream", "model_list", "count_prompt_tokens",
           "MASTER_KEY"]

REPO = Path(__file__).resolve().parents[2]
INSTALL = "python3.11 -m venv .venv-litellm && .venv-litellm/bin/pip install -e '.[litellm]'"
MASTER_KEY = "sk-litellm-master-0123456789"
CALLBACK = "spendgate.integrations.litellm.proxy.callback"
CUSTOM_AUTH = "spendgate.integrations.litellm.proxy.custom_auth"


def _die_with_parent() -> None:
    """Children get SIGKILL if the test process dies, so no proxy outlives a crashed run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def litellm_executable() -> Path:
    """The `litellm` of `.venv-litellm` (or SPENDGATE_TEST_LITELLM); raises naming the install command."""
    path = Path(os.environ.get("SPENDGATE_TEST_LITELLM") or REPO / ".venv-litellm" / "bin" / "litellm")
    if not path.is_file():
        raise FileNotFoundError(f"no LiteLLM proxy at {path}; install it (from the repository root) with: {INSTALL}")
    return path


def model_list(upstream: str) -> list[dict[str, Any]]:
    """LiteLLM models over the fake upstream (tests/support/fake_openai.py), priced as OpenAI's."""
    def model(name: str, provider_model: str, prefix: str = "") -> dict[str, Any]:
        return {"model_name": name, "litellm_params": {
            "model": f"openai/{provider_model}", "api_key": "fake", "api_base": f"{upstream}{prefix}/v1"}}

    return [
        model("gpt-4o", "gpt-4o"),
        model("gpt-4o-mini", "gpt-4o-mini"),
        model("gpt-4o-error", "gpt-4o", "/error"),
        model("gpt-4o-slow", "gpt-4o", "/slow"),
        # Names Spendgate's shipped price table lacks (LiteLLM prices them as their gpt-4o deployment):
        model("house-model", "gpt-4o"),
        model("gpt-4o-cached", "gpt-4o", "/cached"),  # usage with cached and reasoning tokens
    ]


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPENDGATE_", "LITELLM_"))}
    # No network: LiteLLM's own price table, not a download.
    return env | {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"} | extra


def count_prompt_tokens(messages: list[list[dict[str, str]]], model: str = "gpt-4o") -> list[int]:
    """LiteLLM's own token count of each prompt (what the callback's estimate counts), from its venv."""
    python = litellm_executable().parent / "python"
    script = ("import json, sys, litellm; print(json.dumps([litellm.token_counter(model=sys.argv[1], messages=m) "
              "for m in json.load(sys.stdin)]))")
    done = subprocess.run([str(python), "-c", script, model], input=json.dumps(messages), capture_output=True,
                          text=True, env=_env({}), timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"counting tokens with LiteLLM failed:\n{done.stderr[-2000:]}")
    return [int(n) for n in json.loads(done.stdout.strip().splitlines()[-1])]


@dataclass
class LiteLLMProxy:
    """`litellm --config` on a free loopback port. `spendgate` None: no Spendgate callback at all
    (the bench's baseline); otherwise the environment the integration reads (SPENDGATE_URL, …)."""

    workdir: Path
    upstream: str
    spendgate: dict[str, str] | None
    #: `general_settings.custom_auth`: Spendgate's key auth by default; None for LiteLLM's own auth.
    custom_auth: str | None = CUSTOM_AUTH
    cache: bool = False
    name: str = "litellm"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def config(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"num_retries": 0, "request_timeout": 60}
        general: dict[str, Any] = {"master_key": MASTER_KEY}
        if self.spendgate is not None:
            settings["callbacks"] = [CALLBACK]
        if self.custom_auth is not None:
            general["custom_auth"] = self.custom_auth
        if self.cache:
            settings |= {"cache": True, "cache_params": {"type": "local"}}
        return {"model_list": model_list(self.upstream), "litellm_settings": settings,
                "router_settings": {"num_retries": 0}, "general_settings": general}

    def start(self) -> None:
        config = self.workdir / f"{self.name}.json"  # YAML is a superset of JSON
        config.write_text(json.dumps(self.config(), indent=2))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(litellm_executable()), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port)],
                env=_env(self.spendgate or {}), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"LiteLLM proxy {self.name} exited:\n{self.log_tail()}")
                try:
                    if (await client.get(f"{self.url}/health/liveliness")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"LiteLLM proxy {self.name} not ready in {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


@dataclass
class FakeUpstream:
    """tests/support/fake_openai.py in its own process (see there for its routes)."""

    prompt_tokens: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        script = REPO / "tests" / "support" / "fake_openai.py"
        self.process = subprocess.Popen(
            [sys.executable, str(script), "--port", str(self.port), "--prompt-tokens", str(self.prompt_tokens)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                try:
                    if (await client.get(f"{self.url}/stats")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the fake OpenAI upstream did not start")
                await asyncio.sleep(0.05)

    async def stats(self) -> dict[str, int]:
        async with httpx.AsyncClient(timeout=5) as client:
            return dict((await client.get(f"{self.url}/stats")).json())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
