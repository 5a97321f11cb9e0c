"""The built wheel, installed in a fresh virtualenv outside the checkout, works on its own.

The wheel is built (`pip wheel --no-deps`) from a copy of exactly what the Dockerfile's build stage
copies, so this is also the image's build. Installing the dependencies into the new virtualenv makes
this module slow (pip's cache keeps it to well under a minute here); it is never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import spendgate
from spendgate.policy.loader import load_policy_set
from support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
#: What the Dockerfile's build stage copies (tests/test_compose.py checks .dockerignore keeps them).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "service", "policies", "policy_tests")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # outside the checkout: the commands run here

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    @property
    def env(self) -> dict[str, str]:
        """No SPENDGATE_* and no PYTHONPATH: nothing may lead the installed package back to the checkout."""
        return {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_") and k != "PYTHONPATH"}

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    assert ROOT not in base.parents
    stage = base / "src"
    stage.mkdir()
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, stage / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "_bundled"))
        else:
            shutil.copy2(source, stage / name)
    dist = base / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(stage)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("spendgate-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr
    workdir = base / "run"
    workdir.mkdir()
    return Installed(wheel, venv, workdir)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_the_wheel_is_named_for_the_one_version_and_carries_lua_and_policies(installed: Installed) -> None:
    assert installed.wheel.name == f"spendgate-{spendgate.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert "spendgate/counters/lua/commit.lua" in names
    assert "spendgate/_bundled/policies/data.json" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "spendgate/tests/"))]
    console = Path(spendgate.__file__).parent / "console"
    shipped = {f"spendgate/{p.relative_to(console.parent).as_posix()}" for p in console.rglob("*")
               if p.is_file() and p.parent.name in ("templates", "static", "vendor")}
    assert "spendgate/console/static/vendor/uPlot.LICENSE" in shipped and len(shipped) > 10
    assert shipped <= names, f"console files missing from the wheel: {sorted(shipped - names)}"


def test_version_prints_the_package_version(installed: Installed) -> None:
    result = installed.run(installed.bin("spendgate"), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"spendgate {spendgate.__version__}"


def test_the_installed_package_carries_the_checkouts_policies_and_their_tests(installed: Installed) -> None:
    where = installed.run(installed.bin("python"), "-c",
                          "from spendgate.resources import resource_root; print(resource_root())")
    assert where.returncode == 0, where.stderr
    root = Path(where.stdout.strip())
    assert installed.venv in root.parents  # the bundled copy, not the checkout
    for name in ("policies", "policy_tests"):
        assert _files(root / name) == _files(ROOT / name), f"bundled {name}/ differs from the checkout's"


def test_policy_tests_run_from_the_installed_wheel(installed: Installed) -> None:
    result = installed.run(installed.bin("spendgate"), "policy", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS:" in result.stdout and "FAIL" not in result.stdout


@dataclass(frozen=True)
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def readyz(self) -> dict[str, object]:
        """/readyz once the server answers; fails with the server's log if it exits first."""
        deadline = time.monotonic() + 120  # a guard against hanging, not a measurement
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=5) as response:
                    assert response.status == 200
                    return json.loads(response.read())  # type: ignore[no-any-return]
            except OSError:
                assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()
                time.sleep(0.2)


@pytest.fixture
def served(installed: Installed) -> Iterator[Served]:
    """`spendgate serve` from the virtualenv, in a directory outside the checkout, all defaults."""
    port = free_port()
    log = installed.workdir / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([installed.bin("spendgate"), "serve", "--port", str(port)],
                                   cwd=installed.workdir, env=installed.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Served(f"http://127.0.0.1:{port}", process, log)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, log.read_text()


def test_serve_from_outside_the_checkout_is_ready_with_the_bundled_policy_revision(
    installed: Installed, served: Served
) -> None:
    body = served.readyz()
    assert body["status"] == "ready"
    assert body["policy_revision"] == load_policy_set(ROOT / "policies").revision
    assert body["policy_engine"] == "compiled"  # the wheel's probes prove its policies for the compiled VM
    assert (installed.workdir / "spendgate.db").is_file()  # the SQLite default, in the working directory
