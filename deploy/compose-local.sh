#!/usr/bin/env bash
# docker-compose.yml's topology as local processes (no container engine needed): one PostgreSQL
# database, one redis-server, an OPA-compatible server and the Spendgate replicas, with the compose
# file's environment. Ctrl-C stops everything. See deploy/compose_local.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
if ! "$python" -c "import yaml, asyncpg, opa_bindings, spendgate" 2>/dev/null; then
  echo "deploy/compose-local.sh needs the test dependencies (PyYAML, asyncpg, OPA's engine) in $python:" >&2
  echo "  $root/.venv/bin/pip install -e '$root[test]'" >&2
  echo "  $root/.venv/bin/pip install --no-deps --ignore-requires-python --require-hashes -r $root/requirements/opa-engine.txt" >&2
  exit 2
fi
exec "$python" "$root/deploy/compose_local.py" "$@"
