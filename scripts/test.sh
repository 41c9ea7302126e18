#!/usr/bin/env bash
# The test suite: fast CPU tests by default (3.5-7.5 min on 2 cores once set up). Extra arguments go to pytest,
# e.g. `scripts/test.sh -m slow` for the slow ones. Exit 5 (no tests collected) is a failure here.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
