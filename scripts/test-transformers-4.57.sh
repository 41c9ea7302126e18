#!/usr/bin/env bash
# The whole suite again under transformers 4.57.3 (the version TensorRT-LLM's containers pin), in .venv-tf457.
# Installed with --no-compile, as in setup.sh: a minute of byte-compiling saved.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-tf457/bin/python ]; then
  "$PY" -m venv .venv-tf457
  .venv-tf457/bin/pip install -q --no-compile "${TORCH_SPEC:-torch==2.13.0}" 2> >(grep -v "is ignored: it is neither" >&2)
fi
.venv-tf457/bin/pip install -q --no-compile -e ".[test]" "transformers==4.57.3" 2> >(grep -v "is ignored: it is neither" >&2)
.venv-tf457/bin/python -m pytest -q
