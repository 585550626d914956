#!/usr/bin/env bash
# The test command of the README: installs everything the tests need on a fresh machine, then
# runs them. Debian's chromium is needed by tests/test_report.py (the report in a real browser).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; else SUDO=""; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
python3 -m venv .venv
.venv/bin/pip install -q -e '.[local,test]'
.venv/bin/pytest "$@"
