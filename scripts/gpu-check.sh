#!/usr/bin/env bash
# The FP8 GPU check (deploy/gpu_check.py) on a machine with only torch preinstalled and no network.
#   bash scripts/gpu-check.sh wheels   # where PyPI is reachable: the project, ModelOpt and their dependencies
#                                      # as wheels in wheelhouse/ (PY_VERSION=3.12 for another Python)
#   bash scripts/gpu-check.sh run      # on the GPU machine, offline: install from wheelhouse/, run the check
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-run}" in
  wheels)
    mkdir -p wheelhouse
    python3 -m pip wheel --no-deps -w wheelhouse .
    python3 -m pip download -d wheelhouse --only-binary=:all: --python-version "${PY_VERSION:-3.11}" \
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
      nvidia-modelopt transformers safetensors tokenizers huggingface_hub pyyaml tqdm typer numpy pandas \
      matplotlib ninja pydantic rich scipy pulp regex packaging filelock requests
    ;;
  run)
    python3 -m pip install --no-index --find-links wheelhouse --no-deps minitron
    python3 -m pip install --no-index --find-links wheelhouse nvidia-modelopt transformers safetensors pyyaml typer
    out=$PWD/gpu-check.json  # run outside the checkout: its minitron/ folder would shadow the installed package
    (cd /tmp && python3 -m minitron.deploy.gpu_check --out "$out")
    ;;
  *) echo "usage: $0 wheels|run" >&2; exit 2 ;;
esac
