#!/usr/bin/env bash
# The README's first command: set up .venv, then `minitron run recipes/tiny.yaml`, the whole Minitron path on the
# embedded default and the paper's findings tested at its scale (about 10 minutes on 2 CPU cores from nothing,
# seconds once everything is done; an interrupted run resumes). Models land in work/tiny/; the tables, plots and
# verdicts in results/tiny/ are the ones committed with the project. Extra arguments go to `minitron run`
# (e.g. --dry-run for the plan).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/minitron run recipes/tiny.yaml "$@"
