"""`minitron eval run|table|gate|fetch`.

CPU smoke run (offline, seconds):
    minitron eval run --model work/embedded/teacher --suite fixtures --out results/evals/teacher/fixtures
The paper's Table 1 on a GPU with the hub reachable:
    minitron eval run --model DIR --suite base --out results/evals/NAME/base --device cuda --allow-code-execution
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from minitron.cli.options import Device, Overwrite
from minitron.core.errors import BadInput

log = logging.getLogger("minitron")

eval_app = typer.Typer(help="Benchmarks through lm-evaluation-harness: run suites, tables, regression gate.",
                       no_args_is_help=True)


@eval_app.command("run")
def run(
    model: Annotated[str, typer.Option(
        "--model", help="Checkpoint folder or .gguf file (hf), checkpoint folder (vllm) or server URL (openai).")],
    suite: Annotated[str, typer.Option("--suite", help="base, instruct, fixtures, fixtures-code, or a YAML.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to write (atomically).")],
    backend: Annotated[str, typer.Option("--backend", help="hf, vllm or openai.")] = "hf",
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most N documents per task.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="A datasets cache with the suite's datasets, for machines without the hub.")] = None,
    allow_code_execution: Annotated[bool, typer.Option(
        "--allow-code-execution", help="Run model-generated code (HumanEval, MBPP) in sandboxed subprocesses.")] = False,
    label: Annotated[Optional[str], typer.Option("--label", help="Name of this model in tables.")] = None,
    device: Device = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer for the openai backend.")] = None,
    served_model: Annotated[Optional[str], typer.Option("--served-model", help="Model name on the server.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="lm-eval's Python, NumPy, torch and few-shot seeds (1234, "
                                                    "lm-eval's own default, so a run matches lm-eval's).")] = 1234,
    overwrite: Overwrite = False,
):
    """Run a suite on a model and write results, per-sample records and provenance."""
    from minitron.core.records import check_output_dir
    from minitron.evals.backends import BACKENDS, make_lm
    from minitron.evals.run import check_code_execution, check_data, evaluate_suite, write_run
    from minitron.evals.suites import load_suite

    check_output_dir(out, overwrite, reads=(model,))
    if backend not in BACKENDS:
        raise BadInput(f"--backend {backend!r} is unknown; choose from {', '.join(BACKENDS)}")
    spec = load_suite(suite)
    check_code_execution(spec, allow_code_execution)
    data = check_data(spec, data_dir)
    if backend == "hf":
        from minitron.core.gguf import local_model

        model = local_model(model)
    lm = make_lm(backend, model, device=device, batch_size=batch_size, tokenizer=tokenizer, served_model=served_model)
    results = evaluate_suite(lm, spec, limit=limit, allow_code_execution=allow_code_execution, seed=seed,
                             data=data)
    write_run(out, results, spec, model, backend, overwrite=overwrite, label=label, limit=limit,
              data_dir=str(data_dir) if data_dir else None)
    for task in spec.tasks:
        log.info("%-34s %-26s %.4f", task.task, task.metric, results["results"][task.task][task.metric])
    log.info("results in %s", out)


@eval_app.command("table")
def table(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of one suite; the first is the teacher.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for table.md and table.csv.")],
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Label of the teacher run.")] = None,
    paper_columns: Annotated[Optional[str], typer.Option(
        "--paper-columns", help="Comma-separated columns of the paper's table to show (default: all).")] = None,
):
    """A Markdown and CSV table of runs beside the paper's published numbers, with teacher-relative change."""
    from minitron.evals.table import write_table

    columns = [c.strip() for c in paper_columns.split(",")] if paper_columns else None
    frame = write_table(runs, out, teacher=teacher, paper_columns=columns)
    typer.echo(frame.to_markdown(floatfmt=".1f"))


@eval_app.command("gate")
def gate(
    baseline: Annotated[Path, typer.Argument(help="The reference run folder.")],
    candidate: Annotated[Path, typer.Argument(help="The run folder to judge.")],
    max_drop: Annotated[float, typer.Option("--max-drop", help="Largest tolerated drop (0.01 = 1 point).")] = 0.01,
    z: Annotated[float, typer.Option("--z", help="Standard errors a drop must exceed to count.")] = 2.0,
    retrain_sd: Annotated[float, typer.Option(
        "--retrain-sd", help="When the candidate was retrained: the metric's standard deviation over rebuilds of "
                             "one tree (0.03 = 3 points), measured; it widens the standard error.")] = 0.0,
):
    """Exit 0 when no task regressed, 1 when one did, 2 on what it cannot judge (unusable input, changed prompts)."""
    from minitron.evals.gate import gate as judge
    from minitron.evals.gate import report

    if not 0 <= retrain_sd < 1:
        raise BadInput(f"--retrain-sd is a standard deviation of the metric (0.03 = 3 points), not {retrain_sd}")
    verdicts = judge(baseline, candidate, max_drop=max_drop, z=z, retrain_sd=retrain_sd)
    typer.echo(report(verdicts))
    if any(v.status == "REGRESSED" for v in verdicts):
        raise typer.Exit(1)
    if any(v.status == "drift" for v in verdicts):  # the test changed under the model: not a pass
        typer.echo("prompts changed between the runs, so those tasks were not judged: regenerate the baseline "
                   "with this code (minitron eval run), then gate again", err=True)
        raise typer.Exit(2)


@eval_app.command("fetch")
def fetch(
    suite: Annotated[str, typer.Option("--suite", help="The suite whose datasets to download.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where to put the datasets cache.")],
):
    """Download a suite's datasets into a datasets cache (needs the hub); copy it to offline machines."""
    from minitron.evals.run import fetch_datasets
    from minitron.evals.suites import load_suite

    fetch_datasets(load_suite(suite), data_dir)
