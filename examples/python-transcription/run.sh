#!/usr/bin/env bash
# Sets up a virtual environment with the SDK from this checkout (once), then runs the worker.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet -e "$here/../../sdks/python"
fi
exec "$here/.venv/bin/python" "$here/worker.py" "$@"
