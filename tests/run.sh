#!/usr/bin/env bash
# The test command of the README: installs everything the tests need on a fresh machine, then
# runs ruff, mypy (the types of the package and the benchmarks) and every test, slow ones
# included, printing the slowest. Debian's chromium is needed by tests/test_report.py (the
# report in a real browser). Extra arguments go to pytest; for a quick run during
# development: .venv/bin/pytest -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; else SUDO=""; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
python3 -m venv .venv
.venv/bin/pip install -q -e '.[local,test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest --durations=25 "$@"
