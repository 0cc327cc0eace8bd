#!/usr/bin/env bash
# Lint, type-check, build the documentation site (strict: a broken link or docstring reference
# fails) and run the whole test suite. The test fixtures start the storage servers
# (moto, SeaweedFS, fake-gcs-server, Azurite) on free loopback ports and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

"$PY" -m ruff check src tests benchmarks
"$PY" -m ruff format --check src tests benchmarks
"$PY" -m mypy
NO_MKDOCS_2_WARNING=1 "$PY" -m mkdocs build --strict --quiet --site-dir "${TMPDIR:-/tmp}/aiolit-site"
"$PY" -m pytest -q "$@"
