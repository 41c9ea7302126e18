#!/usr/bin/env bash
# The embedded default, end to end on a CPU (about 5 minutes on 2 cores): build a small Llama teacher and its
# data from the Python standard library, correct it on the distillation data, estimate importance, width- and
# depth-prune it, distill both students, quantize one to FP8 with a TensorRT-LLM deployment folder, evaluate
# on the fixture suite, measure throughput, table the results and plot the curves. Models land in work/demo/;
# the tables, plots and run records this writes to results/demo/ are the ones committed with the project.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" MINITRON_CACHE="$PWD/work/cache"
DATA=work/embedded/prose.jsonl
TRAIN=(--seq-len 256 --global-batch 16 --micro-batch 8 --eval-every 10 --eval-batches 4 --overwrite)
OUT=results/demo
set -x
rm -rf "$OUT" && mkdir -p "$OUT"
[ -f work/embedded/teacher/minitron.json ] || python -m compress.embedded --out work/embedded --steps 300
minitron arch --recipe recipes/llama-3.1-minitron-4b-width.yaml
minitron correct --model work/embedded/teacher --data $DATA --out work/demo/corrected --steps 40 \
    --peak-lr 5e-3 --min-lr 1e-4 --warmup 8 "${TRAIN[@]}"
minitron importance --model work/demo/corrected --calib $DATA --out work/demo/importance.safetensors \
    --seq-len 256 --num-samples 64 --overwrite
minitron prune width --model work/demo/corrected --importance work/demo/importance.safetensors \
    --out work/demo/width --hidden-size 96 --ffn-hidden-size 256 --overwrite
minitron prune depth --model work/demo/corrected --calib $DATA --out work/demo/depth \
    --num-layers 4 --scan-lengths 1,2 --seq-len 256 --num-samples 32 --overwrite
cp work/demo/depth/depth_scan.csv work/demo/depth/depth_scan.png "$OUT/"
minitron distill --teacher work/demo/corrected --student work/demo/width --data $DATA --out work/demo/width-kd \
    --steps 40 --lr 1e-3 --min-lr 1e-4 --warmup 4 "${TRAIN[@]}"
minitron distill --teacher work/demo/corrected --student work/demo/depth --data $DATA --out work/demo/depth-kd \
    --steps 40 --lr 1e-3 --min-lr 1e-4 --warmup 4 "${TRAIN[@]}"
minitron quantize --model work/demo/width-kd --calib $DATA --out work/demo/width-fp8 --kv-cache fp8 \
    --seq-len 256 --num-samples 32 --overwrite
cp work/demo/width-fp8/minitron.json "$OUT/fp8-quantize-record.json"
minitron deploy --checkpoint work/demo/width-fp8 --backend trtllm --out work/demo/width-trtllm --dry-run --overwrite
cp work/demo/width-trtllm/manifest.json "$OUT/trtllm-deploy-manifest.json"
minitron eval run --model work/demo/corrected --suite fixtures --out "$OUT/evals/teacher" --label teacher
minitron eval run --model work/demo/width-kd --suite fixtures --out "$OUT/evals/width-kd" --label width-kd
minitron eval run --model work/demo/depth-kd --suite fixtures --out "$OUT/evals/depth-kd" --label depth-kd
minitron eval table "$OUT/evals/teacher" "$OUT/evals/width-kd" "$OUT/evals/depth-kd" --out "$OUT/evals/table" \
    --paper-columns "Llama 3.1 8B,Llama-3.1-Minitron 4B-Width,Llama-3.1-Minitron 4B-Depth"
minitron bench sweep --backend hf --model work/demo/corrected --model work/demo/depth-kd --model work/demo/width-kd \
    --label teacher --label depth --label width --out "$OUT/bench" --isl-osl 64/32,256/64 --batch-size 8 \
    --num-requests 16
minitron bench plot "$OUT/bench" --out "$OUT/bench/report" --baseline teacher
minitron plot work/demo/width-kd/metrics.jsonl work/demo/depth-kd/metrics.jsonl --labels width,depth \
    --metric val_loss --out "$OUT/width-vs-depth.png" --title "Width vs depth pruning, distilled (embedded default)"
