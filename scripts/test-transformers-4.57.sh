#!/usr/bin/env bash
# Pruning, saving and reloading under transformers 4.57.3, in its own venv (.venv-tf457).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-tf457/bin/python ]; then
  "$PY" -m venv .venv-tf457
  .venv-tf457/bin/pip install -q "${TORCH_SPEC:-torch==2.13.0}" 2> >(grep -v "is ignored: it is neither" >&2)
fi
.venv-tf457/bin/pip install -q -e ".[test]" "transformers==4.57.3" 2> >(grep -v "is ignored: it is neither" >&2)
.venv-tf457/bin/python -m pytest -q tests/test_width.py tests/test_depth.py tests/test_importance.py tests/test_cli.py tests/test_kd_loss.py tests/test_train.py tests/test_evals.py tests/test_fixture_tasks.py
