#!/usr/bin/env bash
# Lint, type-check and run the whole test suite. The test fixtures start the storage servers
# (moto, SeaweedFS, fake-gcs-server, Azurite) on free loopback ports and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

"$PY" -m ruff check src tests benchmarks
"$PY" -m ruff format --check src tests benchmarks
"$PY" -m mypy
"$PY" -m pytest -q "$@"
