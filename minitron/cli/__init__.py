"""The `minitron` command: one entry point, a subcommand per stage of the Minitron recipe.

    minitron convert MODEL.gguf --out DIR                                # a llama.cpp file as a HF checkpoint
    minitron arch --recipe recipes/llama-3.1-minitron-4b-width.yaml      # parameter counts, no weights
    minitron importance --model DIR --calib DATA --out scores.safetensors
    minitron prune width --model DIR --calib DATA --out DIR --hidden-size N --ffn-hidden-size N
    minitron prune depth --model DIR --calib DATA --out DIR --num-layers N
    minitron correct --model TEACHER --data DATA --out CORRECTED --tokens N
    minitron distill --teacher CORRECTED --student PRUNED --data DATA --out DISTILLED --tokens N
    minitron plot OUT1/metrics.jsonl OUT2/metrics.jsonl --out curves.png
    minitron quantize --model DISTILLED --calib DATA --out FP8 --kv-cache fp8
    minitron deploy --checkpoint FP8 --backend trtllm --out DEPLOY [--dry-run]
    minitron eval run --model DIR --suite base --out RUN; minitron eval gate BASE RUN
    minitron bench sweep --backend hf --model DIR [--model DIR2] --out OUT [--isl-osl 128/128,2048/128]
    minitron bench plot OUT --out OUT/report [--baseline LABEL]
    minitron run RECIPE [--dry-run] [--rerun STAGES] [--verify]         # a whole recipe, resumable; --verify
                                                                        # reruns it and checks results/
    minitron run RECIPE --dry-run [--gpus 8 --gpu-memory 80]            # the plan, with memory per GPU

Bad input exits with status 2 and one line that names the problem and the fix.
"""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from minitron.cli import compress as compress_cli
from minitron.cli import deploy as deploy_cli
from minitron.cli.bench import bench_app
from minitron.cli.evals import eval_app
from minitron.core.errors import RunFailed, UserError

app = typer.Typer(help="Minitron: prune and distill a model family from one Hugging Face checkpoint.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.command("convert")(compress_cli.convert)
app.command("arch")(compress_cli.arch)
app.command("importance")(compress_cli.importance)
app.command("search")(compress_cli.search)
app.add_typer(compress_cli.prune_app, name="prune")
app.command("distill")(compress_cli.distill)
app.command("correct")(compress_cli.correct)
app.command("plot")(compress_cli.plot)
app.command("quantize")(deploy_cli.quantize)
app.command("deploy")(deploy_cli.deploy)
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")


@app.command("run")
def run_recipe(
    recipe: Path = typer.Argument(..., help="A recipe YAML (recipes/, or your own)."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Where the stages go [default: the recipe's]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and what would be skipped; run nothing."),
    rerun: Optional[str] = typer.Option(
        None, "--rerun", help="Stages to run again from scratch, comma-separated (e.g. after a code change), and "
                              "every stage that reads their output."),
    verify: bool = typer.Option(
        False, "--verify", help="Rerun everything from nothing under WORK_DIR/verify/ and compare the findings with "
                                "the committed ones: exit 1 when a verdict flips or a number leaves the recipe's "
                                "findings.tolerance."),
    gpus: Optional[int] = typer.Option(
        None, "--gpus", help="With --dry-run: plan each training stage's memory per GPU on this many GPUs "
                             "[default: the recipe's cluster section]."),
    gpu_memory: Optional[float] = typer.Option(
        None, "--gpu-memory", help="With --dry-run: memory of each GPU in GB [default: the recipe's, or 80]."),
):
    """The whole recipe: each stage resumes where it stopped and is skipped when done with the same settings."""
    from minitron import pipeline

    pipeline.run(recipe, work_dir, dry_run=dry_run,
                 rerun=[name.strip() for name in rerun.split(",") if name.strip()] if rerun else None, verify=verify,
                 gpus=gpus, gpu_memory_gb=gpu_memory)


USER_ERRORS = (UserError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
"""One line and exit 2: what the user can fix (minitron.core.errors), and the file system's own refusals, which
name the path. Everything else is a bug and keeps its traceback."""
STORAGE = {errno.ENOSPC: "no space left on its disk", errno.EDQUOT: "the disk quota is used up",
           errno.EROFS: "its file system is read-only"}
"""Storage that refuses a write: one line and exit 2 as well (the outputs are written to a temporary folder that is
removed on error, so nothing half-written is left as if it were a result)."""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "lm_eval", "lm-eval"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code here
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in STORAGE:
            raise
        print(f"error: cannot write {err.filename or 'the output'}: {STORAGE[err.errno]}; free space or choose an "
              "--out on another disk, then run the command again", file=sys.stderr)
        return 2
    except typer.Exit as done:
        return done.exit_code
    except Exception as err:  # click's own usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            return 2
        raise
    return code if isinstance(code, int) else 0

