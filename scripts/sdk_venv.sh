#!/usr/bin/env bash
# .venv-sdk/: the SageMaker Python SDK of examples/requirements.txt in a virtual environment of its
# own (the SDK pins its own boto3, numpy and more, apart from .venv). Does nothing when the venv
# already has exactly those requirements; prints the venv's python.
#
# usage: scripts/sdk_venv.sh      (PYTHON picks the interpreter, default python3; SDK_VENV the folder)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${SDK_VENV:-.venv-sdk}"
REQUIREMENTS=examples/requirements.txt
STAMP="$VENV/requirements.installed"

if ! cmp -s "$REQUIREMENTS" "$STAMP" 2>/dev/null; then
    echo "installing $REQUIREMENTS into $VENV/" >&2
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    # pip's output only when it fails: a quiet install still prints a warning per package here.
    if ! log="$("$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS" 2>&1)"; then
        echo "$log" >&2
        exit 1
    fi
    cp "$REQUIREMENTS" "$STAMP"
fi
echo "$PWD/$VENV/bin/python"
