#!/usr/bin/env bash
# The Python SDK's checks (mypy --strict, pytest against real `jobwire serve` processes), in a
# virtual environment of their own (sdks/python/.venv). Run by `npm test` after the build.
# Without python3 >= 3.10 and its venv module this skips with a message, except in CI (CI or
# JOBWIRE_PYTHON_REQUIRED set, as .ci/run does), where it fails: CI must run them.
set -uo pipefail
cd "$(dirname "$0")"

skip() {
  if [ -n "${JOBWIRE_PYTHON_REQUIRED:-}" ] || { [ -n "${CI:-}" ] && [ "${CI}" != "false" ]; }; then
    echo "test:python: $1 — failing, because CI must run the Python SDK's tests" >&2
    exit 1
  fi
  echo "test:python: SKIPPED — $1 (install python3 >= 3.10 with venv to run the Python SDK's tests)"
  exit 0
}

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || skip "$PYTHON is not installed"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || skip "$("$PYTHON" --version 2>&1) is older than 3.10"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv >/dev/null 2>&1 || { rm -rf .venv; skip "$PYTHON has no working venv module (Debian: apt-get install python3-venv)"; }
fi
# An editable install: only a change to pyproject.toml needs pip (and the network) again.
stamp="$(cksum < pyproject.toml)"
if [ "$(cat .venv/.jobwire-installed 2>/dev/null)" != "$stamp" ]; then
  # A local folder of wheels first, if one was filled earlier (JOBWIRE_PYTHON_WHEELS, default
  # ~/.cache/jobwire/python-wheels; fill it with: pip download -d DIR 'hatchling>=1.18'
  # 'editables~=0.3' 'httpx>=0.27,<1' 'sniffio>=1.3' 'pytest>=8' 'mypy>=1.10'), then the package
  # index. Where name lookups fail, pip retries each package five times before it gives up on the
  # index: minutes, for what the folder installs in seconds.
  wheels="${JOBWIRE_PYTHON_WHEELS:-$HOME/.cache/jobwire/python-wheels}"
  # One retry, not pip's five, unless PIP_RETRIES says otherwise: where the index cannot be reached
  # but pip's find-links or extra-index-url serve the packages, five cost minutes.
  export PIP_RETRIES="${PIP_RETRIES:-1}"
  pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
  if [ -d "$wheels" ] && "${pip[@]}" --no-index --find-links "$wheels" -e '.[test]' 2>/dev/null; then
    echo "test:python: installed the test dependencies from the wheels in $wheels"
  elif ! "${pip[@]}" -e '.[test]'; then
    skip "could not install the package's test dependencies (offline? a folder of wheels at $wheels would do)"
  fi
  echo "$stamp" > .venv/.jobwire-installed
fi

.venv/bin/python -m mypy || exit 1
.venv/bin/python -m pytest -q -rs "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "test:python: pytest collected no tests (exit code 5): the Python SDK's tests are missing or filtered out" >&2
  exit 1
fi
exit "$code"
