#!/usr/bin/env bash
# Create .venv (once) and install the project with its test extras. Sourced by demo.sh and test.sh.
# TORCH_SPEC picks the torch build; the default is the CPU wheel this project is tested with. --no-compile: pip
# would byte-compile all of torch, transformers and lm-eval (17k files, about a minute on 2 cores); Python
# compiles the modules a command imports when it first imports them instead (each time, where
# PYTHONDONTWRITEBYTECODE is set: the test suite took 6 min 44 s there against 5 min 02 s byte-compiled).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q --no-compile "${TORCH_SPEC:-torch==2.13.0}" 2> >(grep -v "is ignored: it is neither" >&2)
fi
if ! .venv/bin/python -c "import minitron.compress, pytest, pyarrow" 2>/dev/null || [ pyproject.toml -nt .venv/.installed ] \
    || [ constraints.txt -nt .venv/.installed ]; then
  constraints=constraints.txt  # the versions results/ was measured with; MINITRON_UNPINNED=1 takes the newest
  [ -z "${MINITRON_UNPINNED:-}" ] || constraints=/dev/null
  .venv/bin/pip install -q --no-compile -e ".[test]" -c "$constraints" 2> >(grep -v "is ignored: it is neither" >&2)
  touch .venv/.installed
fi
