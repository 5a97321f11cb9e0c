#!/usr/bin/env bash
# The test command the README gives: install what the tests need into the checkout's venvs, then pytest.
#   .venv          the service with its test extra, plus OPA's own Go engine (requirements/opa-engine.txt
#                  says why that wheel needs --ignore-requires-python)
#   .venv-litellm  a LiteLLM proxy with the Spendgate integration, for tests/integrations (its pins differ
#                  from the service's, so it gets a venv of its own)
# Arguments go to pytest (e.g. `bash tests/run.sh -k litellm`). Needs PostgreSQL on 127.0.0.1:5432 (trust
# auth) and the redis-server binary; the console's browser tests need Debian's chromium + chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/.."

python3.11 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
.venv/bin/pip install -q --no-deps --ignore-requires-python --require-hashes -r requirements/opa-engine.txt
python3.11 -m venv .venv-litellm
.venv-litellm/bin/pip install -q -e '.[litellm]'
exec .venv/bin/pytest "$@"
