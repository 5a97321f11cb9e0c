"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a container engine.

What can be checked here is checked against the code it configures: the replicas' environment must
make a valid production `Settings`, every SPENDGATE_* name must be a real setting, OPA must load no
policy files (the replicas push theirs), images are pinned, the Dockerfile builds from the wheel and
copies nothing .dockerignore leaves out. The last test runs deploy/compose-local.sh, the compose
topology as local processes, end to end.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from spendgate.settings import Settings, get_settings
from support.app import ADMIN_TOKEN, GATEWAY_TOKEN
from support.services import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
REPLICAS = {name: service for name, service in SERVICES.items() if "build" in service}
DEPENDENCIES = {name: service for name, service in SERVICES.items() if "build" not in service}
#: An exact release: digits and dots (at least major.minor), optionally a variant such as -slim, -debug.
PINNED_TAG = re.compile(r"^\d+\.\d+(\.\d+)?(-[a-z0-9][a-z0-9.-]*)?$")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined.splitlines() if line.strip()]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction, arguments in _dockerfile_instructions():
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, arguments))
    return stages


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as a replica sees it: tokens filled in as .env would, mounts resolved."""
    tokens = {"SPENDGATE_ADMIN_TOKEN": ADMIN_TOKEN, "SPENDGATE_GATEWAY_TOKEN": GATEWAY_TOKEN}
    env = {}
    for key, value in service["environment"].items():
        value = re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", lambda m: tokens[m.group(1)], str(value))
        env[key] = value
    return env


def _host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository folder a container path shows through a bind mount, if it is under one."""
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("./") and (container_path == target or container_path.startswith(target + "/")):
            return ROOT / source / container_path[len(target):].lstrip("/")
    return None


def test_every_image_is_pinned_to_an_exact_version_tag() -> None:
    images = [service["image"] for service in DEPENDENCIES.values()]
    images += [args.split()[0] for stage in _stages() for instruction, args in stage if instruction == "FROM"]
    assert images
    for image in images:
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and "latest" not in tag and PINNED_TAG.match(tag), f"{image} is not pinned to a version"


def test_every_service_has_a_health_check() -> None:
    for name, service in SERVICES.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_the_replicas_wait_for_every_dependency_to_be_healthy() -> None:
    assert len(REPLICAS) >= 2
    for name, replica in REPLICAS.items():
        assert replica["depends_on"] == {dep: {"condition": "service_healthy"} for dep in DEPENDENCIES}, name


def test_the_replicas_are_built_from_the_dockerfile() -> None:
    for replica in REPLICAS.values():
        assert replica["build"]["context"] == "."
        assert (ROOT / replica["build"].get("dockerfile", "Dockerfile")).resolve() == ROOT / "Dockerfile"
        assert "dockerfile_inline" not in replica["build"]


def test_every_spendgate_variable_in_the_compose_file_is_a_setting() -> None:
    settings = {"SPENDGATE_" + name.upper() for name in Settings.model_fields}
    for name, replica in REPLICAS.items():
        unknown = {key for key in replica["environment"] if key.startswith("SPENDGATE_")} - settings
        assert not unknown, f"{name}: {unknown} are not Settings fields (typo? removed setting?)"


def test_the_replica_environment_is_a_valid_production_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings itself says what production requires (tokens, PostgreSQL, ...): it must accept this."""
    for name, replica in REPLICAS.items():
        env = _environment(replica)
        policy_dir = _host_path(replica, env["SPENDGATE_POLICY_DIR"])
        assert policy_dir is not None, f"{name}: SPENDGATE_POLICY_DIR is not a mounted folder"
        env["SPENDGATE_POLICY_DIR"] = str(policy_dir)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        settings = get_settings()  # raises ValidationError naming what is missing or wrong
        assert settings.environment == "production" and settings.is_postgres
        assert settings.redis_url and settings.opa_url


def test_service_urls_name_services_of_the_compose_file() -> None:
    for replica in REPLICAS.values():
        env = _environment(replica)
        hosts = {re.match(r"^[a-z+]+://(?:[^@/]*@)?([^:/]+)", env[key]).group(1)  # type: ignore[union-attr]
                 for key in ("SPENDGATE_DATABASE_URL", "SPENDGATE_REDIS_URL", "SPENDGATE_OPA_URL")}
        assert hosts == set(DEPENDENCIES)


def test_bind_mounts_exist_in_the_repository() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).resolve().exists(), f"{name}: {source} does not exist"


def test_opa_loads_no_policy_files_because_the_replicas_push_them() -> None:
    """One way in: a second copy of every package (files + pushes) makes OPA refuse the push."""
    (opa,) = [s for s in DEPENDENCIES.values() if s["image"].startswith("openpolicyagent/opa:")]
    command = opa["command"]
    assert command[:2] == ["run", "--server"]
    flags_with_values = {"--addr", "-a", "--log-level", "-l", "--log-format"}
    positional = [arg for i, arg in enumerate(command[2:], 2)
                  if not arg.startswith("-") and command[i - 1] not in flags_with_values]
    assert positional == [], f"OPA would load {positional}"
    assert not {"--watch", "-w", "--bundle", "-b", "--config-file", "-c"} & set(command)
    assert "volumes" not in opa
    for replica in REPLICAS.values():
        env = _environment(replica)
        assert env["SPENDGATE_OPA_URL"]
        assert _host_path(replica, env["SPENDGATE_POLICY_DIR"]) == ROOT / "policies"
        mount = next(v for v in replica["volumes"] if v.startswith("./policies:"))
        assert mount.endswith(":ro")


def test_the_dockerfile_builds_the_wheel_and_runs_it_as_an_unprivileged_user() -> None:
    build, *_, runtime = _stages()
    assert len(_stages()) >= 2
    build_runs = " ".join(args for instruction, args in build if instruction == "RUN")
    assert "pip wheel" in build_runs
    runtime_runs = " ".join(args for instruction, args in runtime if instruction == "RUN")
    assert re.search(r"pip install --no-index\b.*spendgate-\*\.whl", runtime_runs)
    assert not [args for instruction, args in runtime if instruction == "COPY" and "--from" not in args]
    users = [args for instruction, args in runtime if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    (cmd,) = [args for instruction, args in runtime if instruction == "CMD"]
    assert cmd.startswith('["spendgate", "serve", "--host", "0.0.0.0"')


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins, a `!` pattern re-includes; a directory covers its files."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_the_build_context_keeps_everything_the_dockerfile_copies_and_no_secrets() -> None:
    sources = [src for stage in _stages() for instruction, args in stage if instruction == "COPY"
               and "--from" not in args for src in args.split()[:-1]]
    assert {"pyproject.toml", "setup.py", "service", "policies", "policy_tests"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        files = [source] if (ROOT / source).is_file() else [
            p.relative_to(ROOT).as_posix() for p in (ROOT / source).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
            and not any(part.endswith(".egg-info") for part in p.parts)
        ]
        for file in files:
            assert not _dockerignore_excludes(file), f"COPY {source} needs {file}, which .dockerignore excludes"
    assert _dockerignore_excludes(".env") and _dockerignore_excludes(".git/config")
    assert _dockerignore_excludes("service/spendgate/__pycache__/cli.cpython-311.pyc")


# --- the compose topology as local processes ------------------------------------------------------


def _read_ready_block(process: subprocess.Popen[str]) -> dict[str, str]:
    """The `name url` lines compose-local prints once every replica answers /readyz."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # ends at EOF if the script gives up (it has its own deadline)
        lines.append(line)
        if line.startswith("  logs "):
            break
    assert any(line.startswith("compose-local: ready") for line in lines), "".join(lines)
    return dict(line.split(None, 1) for line in (line.strip() for line in lines) if line and ":" not in line.split()[0])


def _database_exists(name: str) -> bool:
    async def check() -> bool:
        connection = await asyncpg.connect(PG_ADMIN_URL)
        try:
            return bool(await connection.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name))
        finally:
            await connection.close()

    return asyncio.run(check())


def test_compose_local_runs_two_replicas_that_share_one_ledger_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_") or k.startswith("SPENDGATE_TEST_")}
    env |= {"SPENDGATE_ADMIN_TOKEN": ADMIN_TOKEN, "SPENDGATE_GATEWAY_TOKEN": GATEWAY_TOKEN, "PYTHON": sys.executable}
    process = subprocess.Popen([str(ROOT / "deploy" / "compose-local.sh")], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls = _read_ready_block(process)
        assert set(REPLICAS) <= urls.keys()
        one, two = (urls[name] for name in sorted(REPLICAS)[:2])
        database = urls["postgres"].rsplit("/", 1)[1]
        assert _database_exists(database)
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        gateway = {"authorization": f"Bearer {GATEWAY_TOKEN}"}
        with httpx.Client(timeout=30) as client:
            for kind, body in (("orgs", {"id": "acme", "name": "Acme", "budget": {"max_budget": "100"}}),
                               ("teams", {"id": "search", "name": "Search", "org_id": "acme"}),
                               ("keys", {"id": "k1", "team_id": "search"})):
                created = client.post(f"{one}/v1/admin/{kind}", json=body, headers=admin)
                assert created.status_code == 201, created.text
            secret = created.json()["key"]
            allowed = client.post(f"{one}/v1/authorize", headers=gateway,
                                  json={"request_id": "r1", "api_key": secret, "estimated_cost": "1.00"})
            assert allowed.status_code == 200 and allowed.json()["decision"] == "allow", allowed.text
            recorded = client.post(f"{two}/v1/record", headers=gateway,
                                   json={"request_id": "r1", "api_key": secret, "cost": "0.75", "outcome": "success"})
            assert recorded.status_code == 200 and recorded.json()["recorded"] is True, recorded.text
            org = client.get(f"{one}/v1/admin/orgs/acme", headers=admin).json()
            assert [ledger["spent"] for ledger in org["ledgers"] if ledger["window"] is None] == ["0.750000"]
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "compose-local: stopped" in out and "Traceback" not in err
    assert not _database_exists(database)
    for url in (one, two):
        host, port = url.rsplit("/", 1)[1].split(":")
        with socket.socket() as sock:
            assert sock.connect_ex((host, int(port))) != 0, f"{url} still listening"
