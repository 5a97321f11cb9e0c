# syntax=docker/dockerfile:1
# Spendgate's image. Stage 1 builds the spendgate wheel (policies/ and policy_tests/ bundled inside
# it, see setup.py) and a wheel of every dependency; stage 2 installs those wheels, offline, into a
# slim runtime with no source tree, no compiler and no pip cache, and runs as an unprivileged user.
#
#   docker build -t spendgate .
#   docker run --rm -p 8080:8080 spendgate          # SQLite in /app, bundled policies, generated tokens
#
# The base image is pinned by its exact version tag; bump it deliberately (and the tag in the tests).

FROM python:3.11.15-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Exactly what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml setup.py MANIFEST.in README.md LICENSE ./
COPY service ./service
COPY policies ./policies
COPY policy_tests ./policy_tests
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11.15-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Installed from the wheels only (--no-index): the image runs what stage 1 built, nothing fetched later.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels /wheels/spendgate-*.whl \
 && useradd --system --uid 10001 --user-group --home-dir /app --create-home spendgate
USER spendgate
WORKDIR /app
EXPOSE 8080
CMD ["spendgate", "serve", "--host", "0.0.0.0", "--port", "8080"]
