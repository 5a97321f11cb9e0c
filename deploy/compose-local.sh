#!/usr/bin/env bash
# docker-compose.yml's topology as local processes (no container engine needed): one PostgreSQL
# database, one redis-server, an OPA-compatible server and the Spendgate replicas, with the compose
# file's environment. Ctrl-C stops everything. See deploy/compose_local.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
exec "$python" "$root/deploy/compose_local.py" "$@"
