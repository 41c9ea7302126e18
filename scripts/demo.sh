#!/usr/bin/env bash
# The embedded default, end to end on a CPU: build a small Llama and its data from the Python standard
# library, estimate importance, width-prune and depth-prune it. Outputs land in work/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" MINITRON_CACHE="$PWD/work/cache"
set -x
python -m compress.embedded --out work/embedded
minitron arch --recipe recipes/llama-3.1-minitron-4b-width.yaml
minitron importance --model work/embedded/teacher-init --calib work/embedded/prose.jsonl \
    --out work/importance.safetensors --seq-len 256 --num-samples 64 --overwrite
minitron prune width --model work/embedded/teacher-init --importance work/importance.safetensors \
    --out work/width --hidden-size 96 --ffn-hidden-size 256 --overwrite
minitron prune depth --model work/embedded/teacher-init --calib work/embedded/prose.jsonl --out work/depth \
    --num-layers 4 --scan-lengths 1,2 --seq-len 256 --num-samples 32 --overwrite
