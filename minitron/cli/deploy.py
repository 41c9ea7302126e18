"""`minitron quantize` and `minitron deploy`.

CPU smoke run (the embedded default):
    minitron quantize --model work/tiny/distilled --calib work/tiny/embedded/prose.jsonl --out work/width-fp8 \
        --seq-len 256 --num-samples 32 --kv-cache fp8
    minitron deploy --checkpoint work/width-fp8 --backend trtllm --out work/width-trtllm --dry-run
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from minitron.cli.options import Device, Overwrite

log = logging.getLogger("minitron")


def quantize(
    model: Annotated[str, typer.Option("--model", help="The BF16/FP32 checkpoint folder to quantize.")],
    calib: Annotated[str, typer.Option("--calib", help="Calibration text (a sample of the distillation data).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the FP8 checkpoint.")],
    kv_cache: Annotated[str, typer.Option("--kv-cache", help="fp8, or auto (the model's dtype).")] = "auto",
    num_samples: Annotated[int, typer.Option("--num-samples", help="Calibration blocks.")] = 512,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help="Tokens per block [default: 512].")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    dtype: Annotated[str, typer.Option("--dtype", help="Dtype of the unquantized weights kept in the export.")] = "bfloat16",
    eval_blocks: Annotated[int, typer.Option("--eval-blocks", help="Held-out blocks for loss and KL.")] = 64,
    eval_suite: Annotated[Optional[str], typer.Option(
        "--eval-suite", help="Also compare both models on this eval suite (e.g. fixtures).")] = None,
    device: Device = "auto",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    overwrite: Overwrite = False,
):
    """FP8 (E4M3) weights and activations with ModelOpt, exported as a unified HF checkpoint, accuracy measured."""
    from minitron.deploy.quantize import quantize as run
    from minitron.evals.scorers import suite_comparison

    compare = suite_comparison(eval_suite, device) if eval_suite else None
    run(model, calib, out, kv_cache=kv_cache, num_samples=num_samples, seq_len=seq_len, batch_size=batch_size,
        dtype=dtype, eval_blocks=eval_blocks, compare_models=compare, device=device, seed=seed, overwrite=overwrite)


def deploy(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="FP8 (from `minitron quantize`) or BF16 folder.")],
    backend: Annotated[str, typer.Option("--backend", help="trtllm or vllm.")],
    out: Annotated[Path, typer.Option("--out", help="The deployment folder to write.")],
    engine: Annotated[Optional[str], typer.Option(
        "--engine", help="tensorrt: build a serialized TensorRT engine (TensorRT-LLM 1.2.x).")] = None,
    max_batch_size: Annotated[Optional[int], typer.Option(
        "--max-batch-size", help="Default: the paper's, 64 for the 4B class and 32 for 8B-12B.")] = None,
    max_seq_len: Annotated[Optional[int], typer.Option("--max-seq-len", help="Default: min(8192, positions).")] = None,
    max_num_tokens: Annotated[int, typer.Option("--max-num-tokens")] = 8192,
    gpu_memory_gb: Annotated[float, typer.Option("--gpu-memory-gb", help="Default: H100 80GB.")] = 80.0,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Write the folder and print the commands; build and run nothing.")] = False,
    overwrite: Overwrite = False,
):
    """A deployment folder for TensorRT-LLM or vLLM: checkpoint, engine options, commands, manifest."""
    from minitron.deploy.deploy import deploy as run

    manifest = run(checkpoint, backend, out, engine=engine, max_batch_size=max_batch_size, max_seq_len=max_seq_len,
                   max_num_tokens=max_num_tokens, gpu_memory_gb=gpu_memory_gb, dry_run=dry_run, overwrite=overwrite)
    for name, command in manifest["commands"].items():
        typer.echo(f"# {name}\n{command}")
    if dry_run:
        log.info("dry run: %s written; nothing was built or run (%s)", out,
                 f"{backend} {manifest['installed_engine_version']} installed" if manifest["installed_engine_version"]
                 else f"{backend} not installed here")
    else:
        log.info("deployed to %s; smoke test: %r", out, manifest["smoke_test"])
