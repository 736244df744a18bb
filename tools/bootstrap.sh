#!/usr/bin/env bash
# Create .venv and install the project with its test extras.
# torch goes in first, pinned (TORCH_SPEC, default torch==2.13.0): on this project's CPU
# machines pip finds that version as an on-disk CPU wheel, and installing it before the
# project stops the dependency resolver from pulling a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
"$PYTHON" - <<'PY'
import sys
if not ((3, 10) <= sys.version_info[:2] <= (3, 12)):
    sys.exit(f"BreastLesionCAM needs Python 3.10-3.12, found {sys.version.split()[0]}")
PY
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    echo "bootstrap: installing $TORCH_SPEC"
    $PIP install --quiet --disable-pip-version-check "$TORCH_SPEC"
fi
echo "bootstrap: installing BreastLesionCAM and test dependencies"
$PIP install --quiet --disable-pip-version-check -e ".[test]"
touch .venv/.bootstrapped
