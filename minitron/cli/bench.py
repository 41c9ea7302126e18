"""`minitron bench sweep|plot`: throughput over an ISL/OSL grid, and the paper's Figure 10 from the records.

CPU smoke run after scripts/demo.sh, the teacher and its two students, then the report (10 s):
    minitron bench sweep --backend hf --model work/tiny/corrected --model work/tiny/distilled-depth \
        --model work/tiny/distilled --label teacher --label depth --label width --out work/bench-cpu \
        --isl-osl 64/32,256/64 --batch-size 8 --num-requests 16 --repeats 3
    minitron bench plot work/bench-cpu --out work/bench-cpu/report
Figure 10 on one H100 with TensorRT-LLM (deployment folders from `minitron deploy`):
    minitron bench sweep --backend trtllm --model deploy/llama-8b --out results/bench/h100 --batch-size 32
    minitron bench sweep --backend trtllm --model deploy/4b-depth --model deploy/4b-width --out results/bench/h100 \
        --batch-size 64
    minitron bench plot results/bench/h100 --out results/bench/h100/report --baseline llama-8b
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from minitron.bench.workload import DEFAULT_GRID
from minitron.cli.options import Device

log = logging.getLogger("minitron")

bench_app = typer.Typer(help="Throughput sweeps over ISL/OSL (hf, vllm, trtllm, openai) and Figure 10 reports.",
                        no_args_is_help=True)


@bench_app.command("sweep")
def sweep(
    model: Annotated[list[str], typer.Option(
        "--model", help="Checkpoint folder (hf, vllm), deployment folder (trtllm, vllm) or server URL (openai); "
                        "repeat to measure several models in one run.")],
    out: Annotated[Path, typer.Option("--out", help="Folder of records.jsonl; rerunning with it resumes.")],
    backend: Annotated[str, typer.Option("--backend", help="hf, vllm, trtllm or openai.")] = "hf",
    isl_osl: Annotated[str, typer.Option("--isl-osl", help="Grid of ISL/OSL pairs, comma-separated.")] = DEFAULT_GRID,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Requests in flight at once (the paper: 32 for "
                                                                 "8B-12B, 64 for 4B).")] = 32,
    num_requests: Annotated[Optional[int], typer.Option(
        "--num-requests", help="Requests per point and repeat [default: 4 x --batch-size].")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Measured repeats per point (median, min, max).")] = 3,
    warmup: Annotated[Optional[int], typer.Option(
        "--warmup", help="Warm-up requests before each point [default: one batch].")] = None,
    label: Annotated[Optional[list[str]], typer.Option(
        "--label", help="Name in tables, one per --model in order [default: the folder name].")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic prompts (1234, as the eval runs', so "
                                                    "committed sweeps keep their prompts).")] = 1234,
    device: Device = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="hf: auto (the checkpoint's), bfloat16, float16, "
                                                       "float32.")] = "auto",
    tokenizer: Annotated[Optional[str], typer.Option(
        "--tokenizer", help="openai: the served model's checkpoint or deployment folder.")] = None,
    served_model: Annotated[Optional[str], typer.Option(
        "--served-model", help="openai: model name on the server [default: the first it lists].")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per engine run or streamed request.")] = 3600.0,
):
    """Measure each model at each ISL/OSL point; records are appended to OUT/records.jsonl as points finish."""
    from minitron.bench.records import RECORDS_NAME
    from minitron.bench.sweep import Settings
    from minitron.bench.sweep import sweep as run_sweep
    from minitron.bench.workload import parse_grid

    settings = Settings(batch_size=batch_size, num_requests=num_requests, repeats=repeats, warmup=warmup, seed=seed,
                        device=device, dtype=dtype, tokenizer=tokenizer, served_model=served_model, timeout=timeout)
    written = run_sweep(backend, model, out, parse_grid(isl_osl), settings, labels=label)
    log.info("%d new records in %s; report with `minitron bench plot %s --out %s`", len(written),
             out / RECORDS_NAME, out, out / "report")


@bench_app.command("plot")
def plot(
    results: Annotated[list[Path], typer.Argument(help="Sweep folders (or their records.jsonl files).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for figure10.png, report.md, points.csv, "
                                                    "speedup.csv.")],
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", help="Label to compute speedups over [default: the model with the most parameters].")] = None,
):
    """Figure 10 and the speedup tables from stored records, beside the paper's 2.7x (depth) and 1.8x (width)."""
    from minitron.bench.report import markdown, write_report

    summary = write_report(results, out, baseline)
    typer.echo(markdown(summary))
    log.info("figure and tables in %s", out)
