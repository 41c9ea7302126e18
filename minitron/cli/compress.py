"""`minitron arch`, `minitron importance` and `minitron prune width|depth`: the typed functions are the flags.

CPU smoke run on a tiny model (seconds):
    minitron prune width --model work/teacher --calib data.txt --out work/width \
        --hidden-size 32 --ffn-hidden-size 64 --seq-len 64 --num-samples 16
The real thing (one GPU, Llama-3.1-8B to 4B-Width, Table 3 of the paper):
    minitron prune width --model meta-llama/Llama-3.1-8B --calib DATA --out llama-4b-width \
        --hidden-size 3072 --ffn-hidden-size 9216 --seq-len 4096 --device cuda
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from minitron.cli.options import Device, Overwrite
from minitron.core.errors import BadInput

log = logging.getLogger("minitron")

prune_app = typer.Typer(help="Width or depth pruning of a Hugging Face checkpoint.", no_args_is_help=True)

Model = Annotated[str, typer.Option(
    "--model", help="Local HF checkpoint folder (config.json, weights, tokenizer), or a .gguf file.")]
Calib = Annotated[Optional[str], typer.Option(
    "--calib", help="Calibration text: a .txt file, a folder, a JSONL file with a `text` field, Parquet, "
                    "or a hub dataset name (needs network).")]
Out = Annotated[Path, typer.Option("--out", help="Output folder; written atomically.")]
NumSamples = Annotated[int, typer.Option("--num-samples", help="Calibration blocks (the paper uses 1024).")]
SeqLen = Annotated[Optional[int], typer.Option(
    "--seq-len", help="Tokens per calibration block [default: min(4096, the model's max positions)].")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Blocks per forward pass.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the calibration sample.")]
Precision = Annotated[str, typer.Option(
    "--precision", help="auto (bf16 autocast on GPUs and on CPUs with native bf16), bf16 or fp32.")]


def convert(
    gguf_file: Annotated[Path, typer.Argument(help="A GGUF model file (llama, mistral or qwen2 architecture).")],
    out: Out,
    overwrite: Overwrite = False,
):
    """A GGUF file as a HF checkpoint folder (safetensors, config, tokenizer with chat template, minitron.json).
    Every --model/--teacher/--student also takes a .gguf file directly (converted once into the cache)."""
    from minitron.core.gguf import convert as run

    run(gguf_file, out, overwrite=overwrite)


def arch(
    config: Annotated[Optional[Path], typer.Option("--config", help="A config.json (no weights needed).")] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="A recipe YAML: its teacher config and "
                                                                    "pruning target.")] = None,
    hidden_size: Annotated[Optional[int], typer.Option("--hidden-size")] = None,
    ffn_hidden_size: Annotated[Optional[int], typer.Option("--ffn-hidden-size")] = None,
    num_heads: Annotated[Optional[int], typer.Option("--num-heads")] = None,
    num_kv_heads: Annotated[Optional[int], typer.Option("--num-kv-heads")] = None,
    num_experts: Annotated[Optional[int], typer.Option("--num-experts")] = None,
    num_layers: Annotated[Optional[int], typer.Option("--num-layers")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
):
    """Parameter counts (total, non-embedding, and active per token with experts) of a source config and a pruning
    target, on the meta device."""
    from minitron.core.arch import WidthTarget, human_count, target_counts
    from minitron.core.model_io import read_config
    from minitron.recipe import load_recipe

    if recipe is not None:
        spec = load_recipe(recipe)
        config = spec.teacher_config
        target = spec.prune
        if target.budget is not None:
            raise BadInput(f"{recipe} names a budget, so `minitron search` picks its sizes when it runs; count a "
                           "target here with --config and --hidden-size, --ffn-hidden-size, ...")
        hidden_size, ffn_hidden_size = hidden_size or target.hidden_size, ffn_hidden_size or target.ffn_hidden_size
        num_heads, num_kv_heads = num_heads or target.num_heads, num_kv_heads or target.num_kv_heads
        num_experts, num_layers = num_experts or target.num_experts, num_layers or target.num_layers
    if config is None:
        raise BadInput("pass --config PATH (a config.json) or --recipe PATH")
    result = target_counts(read_config(config),
                           WidthTarget(hidden_size, ffn_hidden_size, num_heads, num_kv_heads, num_experts), num_layers)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for side in ("source", "target"):
        counts = result[side]
        active = f"  {human_count(counts['active_params']):>9s} active" if "active_params" in counts else ""
        typer.echo(f"{side:7s} {human_count(counts['params']):>9s} params  "
                   f"{human_count(counts['non_embedding_params']):>9s} non-embedding{active}")
    typer.echo(f"target  {result['target']['dims']}")


def importance(
    model: Model,
    calib: Calib = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the scores (.safetensors).")] = Path(
        "importance.safetensors"),
    num_samples: NumSamples = 1024,
    seq_len: SeqLen = None,
    batch_size: BatchSize = 8,
    seq_agg: Annotated[str, typer.Option("--seq-agg", help="Over the sequence: mean, l2 or max.")] = "mean",
    batch_agg: Annotated[str, typer.Option("--batch-agg", help="Over samples: l2, mean or max.")] = "l2",
    device: Device = "auto",
    precision: Precision = "auto",
    seed: Seed = 0,
    overwrite: Overwrite = False,
):
    """Estimate neuron, head, channel and layer importance once; `prune width --importance` reuses it."""
    from minitron.compress.prune import importance as run

    run(model, calib, out, num_samples=num_samples, seq_len=seq_len, batch_size=batch_size, seq_agg=seq_agg,
        batch_agg=batch_agg, device=device, precision=precision, seed=seed, overwrite=overwrite)


@prune_app.command("width")
def prune_width(
    model: Model,
    out: Out,
    calib: Calib = None,
    hidden_size: Annotated[Optional[int], typer.Option("--hidden-size", help="Target embedding channels.")] = None,
    ffn_hidden_size: Annotated[Optional[int], typer.Option("--ffn-hidden-size", help="Target MLP neurons.")] = None,
    num_heads: Annotated[Optional[int], typer.Option("--num-heads", help="Target query heads.")] = None,
    num_kv_heads: Annotated[Optional[int], typer.Option("--num-kv-heads", help="Target KV groups.")] = None,
    num_experts: Annotated[Optional[int], typer.Option(
        "--num-experts", help="Target experts per layer (mixture-of-experts models; --ffn-hidden-size is then "
                              "each expert's width).")] = None,
    importance_file: Annotated[Optional[Path], typer.Option(
        "--importance", help="Scores from `minitron importance`; skips estimation and --calib.")] = None,
    num_samples: NumSamples = 1024,
    seq_len: SeqLen = None,
    batch_size: BatchSize = 8,
    seq_agg: Annotated[str, typer.Option("--seq-agg", help="Over the sequence: mean, l2 or max.")] = "mean",
    batch_agg: Annotated[str, typer.Option("--batch-agg", help="Over samples: l2, mean or max.")] = "l2",
    ranking: Annotated[str, typer.Option(
        "--ranking", help="activation (the paper's importance, needs --calib), random (its random-pruning "
                          "baseline) or magnitude (weight norms, no data).")] = "activation",
    no_rescale_norms: Annotated[bool, typer.Option(
        "--no-rescale-norms", help="Keep RMSNorm weights as they are when hidden channels are removed.")] = False,
    device: Device = "auto",
    precision: Precision = "auto",
    seed: Seed = 0,
    overwrite: Overwrite = False,
):
    """Rank units by activation importance and trim the checkpoint to the target sizes."""
    from minitron.compress.prune import prune_width as run
    from minitron.core.arch import WidthTarget

    run(model, out, WidthTarget(hidden_size, ffn_hidden_size, num_heads, num_kv_heads, num_experts), calib=calib,
        importance_file=importance_file, ranking=ranking, num_samples=num_samples, seq_len=seq_len,
        batch_size=batch_size, seq_agg=seq_agg, batch_agg=batch_agg, rescale_norms=not no_rescale_norms,
        device=device, precision=precision, seed=seed, overwrite=overwrite)


Metric = Annotated[str, typer.Option(
    "--metric", help="What picks the block besides LM loss: lm-loss, winogrande (the paper's choice), "
                     "fixture-winogrande, stdlib-cloze, stdlib-next-line.")]
ScanLengths = Annotated[Optional[str], typer.Option(
    "--scan-lengths", help="Extra block lengths to scan for the figure, e.g. 1,2,8 (by LM loss only).")]
ScanSamples = Annotated[int, typer.Option("--num-samples", help="Validation blocks scored per candidate.")]


def _metric(metric: str, scan_lengths: str | None) -> dict:
    """--metric and --scan-lengths as the library takes them (as a recipe's are: minitron/stages.py)."""
    from minitron.stages import scan_arguments

    return scan_arguments({"metric": metric, "scan_lengths": scan_lengths})


@prune_app.command("depth")
def prune_depth(
    model: Model,
    out: Out,
    calib: Calib = None,
    num_layers: Annotated[Optional[int], typer.Option(
        "--num-layers", help="Layers to keep; the contiguous block to remove is chosen by the scan.")] = None,
    drop: Annotated[Optional[str], typer.Option(
        "--drop", help="Layers to remove, 0-based inclusive: 15-30 (the paper's 16 to 31), or 3,5,7. Skips the "
                       "scan.")] = None,
    metric: Metric = "lm-loss",
    scan_lengths: ScanLengths = None,
    num_samples: ScanSamples = 1024,
    seq_len: SeqLen = None,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    precision: Precision = "auto",
    seed: Seed = 0,
    overwrite: Overwrite = False,
):
    """Scan contiguous blocks of layers (and non-contiguous choices), then drop the least important block."""
    from minitron.compress.prune import prune_depth as run

    run(model, out, calib=calib, num_layers=num_layers, drop=drop, **_metric(metric, scan_lengths),
        num_samples=num_samples, seq_len=seq_len, batch_size=batch_size, device=device, precision=precision,
        seed=seed, overwrite=overwrite)


@prune_app.command("scan")
def scan_depth(
    model: Model,
    out: Out,
    calib: Calib = None,
    num_layers: Annotated[int, typer.Option(
        "--num-layers", help="Layers a depth-pruned student would keep: sets the block length that --metric "
                             "scores.")] = ...,
    metric: Metric = "lm-loss",
    scan_lengths: ScanLengths = None,
    num_samples: ScanSamples = 1024,
    seq_len: SeqLen = None,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    precision: Precision = "auto",
    seed: Seed = 0,
    overwrite: Overwrite = False,
):
    """The depth-sensitivity scan alone (the paper's Figures 8 and 9): depth_scan.csv and .png, nothing pruned.

        minitron prune scan --model work/smollm2/corrected --calib stdlib --out work/smollm2/depth-scan \
            --num-layers 15 --scan-lengths 1,2 --metric stdlib-next-line --num-samples 4 --seq-len 256
    """
    from minitron.compress.prune import scan_depth as run

    run(model, out, num_layers, calib=calib, **_metric(metric, scan_lengths), num_samples=num_samples,
        seq_len=seq_len, batch_size=batch_size, device=device, precision=precision, seed=seed, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------------------
# training: distill and correct share every flag but their defaults

Data = Annotated[str, typer.Option("--data", help="Training text: file, folder, JSONL, Parquet or hub dataset.")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps.")]
Tokens = Annotated[Optional[int], typer.Option("--tokens", help="Token budget; sets the steps.")]
TrainSeqLen = Annotated[int, typer.Option("--seq-len", help="Tokens per sequence (the paper: 8192).")]
GlobalBatch = Annotated[int, typer.Option("--global-batch", help="Sequences per step over all processes.")]
MicroBatch = Annotated[int, typer.Option("--micro-batch", help="Sequences per forward pass per process.")]
MinLr = Annotated[float, typer.Option("--min-lr", help="End of the cosine decay.")]
EvalEvery = Annotated[int, typer.Option("--eval-every", help="Validate every N steps.")]
EvalBatches = Annotated[int, typer.Option("--eval-batches", help="Validation micro-batches per evaluation.")]
SaveEvery = Annotated[int, typer.Option("--save-every", help="Resumable checkpoint every N steps.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")]
Checkpointing = Annotated[bool, typer.Option(
    "--activation-checkpointing", help="Recompute each layer's activations in the backward: less memory, about a "
                                       "third more compute (needed on 80 GB GPUs at --seq-len 8192).")]


def _train_config(steps, tokens, **fields):
    from minitron.compress.train_config import budgeted_config

    if (steps is None) == (tokens is None):
        raise BadInput("pass exactly one of --steps N or --tokens N")
    return budgeted_config(tokens, **fields, **({"steps": steps} if steps is not None else {}))


def distill(
    teacher: Annotated[str, typer.Option("--teacher", help="The unpruned (or corrected) teacher folder, or .gguf.")],
    student: Annotated[str, typer.Option("--student", help="The pruned student folder, or .gguf.")],
    data: Data,
    out: Out,
    steps: Steps = None,
    tokens: Tokens = None,
    seq_len: TrainSeqLen = 8192,
    global_batch: GlobalBatch = 1152,
    micro_batch: MicroBatch = 1,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (Table 4: 1e-4).")] = 1e-4,
    min_lr: MinLr = 1e-5,
    warmup: Annotated[int, typer.Option("--warmup", help="Warm-up steps (Table 4: 40).")] = 40,
    temperature: Annotated[float, typer.Option("--temperature", help="KD softmax temperature.")] = 1.0,
    lm_weight: Annotated[float, typer.Option("--lm-weight", help="Mix in the student's LM loss.")] = 0.0,
    lm_only: Annotated[bool, typer.Option("--lm-only", help="Train on the LM loss alone (a baseline).")] = False,
    correct_teacher: Annotated[bool, typer.Option(
        "--correct-teacher", help="Correct the teacher in parallel (its LM loss, one fifth of --lr).")] = False,
    random_init: Annotated[bool, typer.Option(
        "--random-init", help="Re-initialise the student's weights (a baseline).")] = False,
    teacher_cache: Annotated[Optional[Path], typer.Option(
        "--teacher-cache", help="Folder keeping the frozen teacher's outputs, reused by runs on the same tokens.")] = None,
    eval_every: EvalEvery = 50,
    eval_batches: EvalBatches = 8,
    save_every: SaveEvery = 100,
    activation_checkpointing: Checkpointing = False,
    precision: Precision = "auto",
    device: Device = "auto",
    seed: Seed = 0,
    resume: Resume = False,
    overwrite: Overwrite = False,
):
    """Logit-only forward-KL distillation of a pruned student from its teacher."""
    from minitron.compress.train import fit

    cfg = _train_config(steps, tokens, seq_len=seq_len, global_batch=global_batch, micro_batch=micro_batch, lr=lr, min_lr=min_lr,
                        warmup=warmup, temperature=temperature, lm_weight=lm_weight, kd=not lm_only,
                        correct_teacher=correct_teacher, teacher_lr=lr / 5, eval_every=eval_every,
                        eval_batches=eval_batches, save_every=save_every, precision=precision, seed=seed,
                        activation_checkpointing=activation_checkpointing)
    fit(student, data, out, cfg, teacher_dir=teacher, stage="distill", resume=resume, overwrite=overwrite,
        random_init=random_init, device=device, teacher_cache=teacher_cache)
    log.info("distilled student written to %s", out)


def correct(
    model: Model,
    data: Data,
    out: Out,
    steps: Steps = None,
    tokens: Tokens = None,
    seq_len: TrainSeqLen = 8192,
    global_batch: GlobalBatch = 1152,
    micro_batch: MicroBatch = 1,
    lr: Annotated[float, typer.Option("--lr", help="Peak LR of the correction (the paper: a fifth of the "
                                                   "distillation's 1e-4).")] = 2e-5,
    min_lr: MinLr = 1e-5,
    warmup: Annotated[int, typer.Option("--warmup", help="Warm-up steps (the paper: 120).")] = 120,
    eval_every: EvalEvery = 50,
    eval_batches: EvalBatches = 8,
    save_every: SaveEvery = 100,
    activation_checkpointing: Checkpointing = False,
    precision: Precision = "auto",
    device: Device = "auto",
    seed: Seed = 0,
    resume: Resume = False,
    overwrite: Overwrite = False,
):
    """Teacher correction: fine-tune the teacher on the distillation data (the paper: at a fifth of the
    distillation's peak LR)."""
    from minitron.compress.train import fit

    cfg = _train_config(steps, tokens, seq_len=seq_len, global_batch=global_batch, micro_batch=micro_batch, lr=lr,
                        min_lr=min(min_lr, lr), warmup=warmup, kd=False, eval_every=eval_every,
                        eval_batches=eval_batches, save_every=save_every, precision=precision, seed=seed,
                        activation_checkpointing=activation_checkpointing)
    fit(model, data, out, cfg, stage="correct", resume=resume, overwrite=overwrite, device=device)
    log.info("corrected teacher written to %s", out)


def plot(
    logs: Annotated[list[Path], typer.Argument(help="metrics.jsonl files written by training runs.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the PNG.")],
    metric: Annotated[str, typer.Option(
        "--metric", help="val_loss, val_kl, loss, kd, lm, grad_norm, lr or tokens_per_s (val_* from "
                         "validation lines).")] = "val_loss",
    x: Annotated[str, typer.Option("--x", help="x axis: tokens or step.")] = "tokens",
    labels: Annotated[Optional[str], typer.Option(
        "--labels", help="Comma-separated legend labels, one per log (default: each log's folder name).")] = None,
    title: Annotated[str, typer.Option("--title", help="Figure title.")] = "",
    ema: Annotated[float, typer.Option(
        "--ema", help="Smooth training metrics with this EMA weight in [0, 1), e.g. 0.9; 0 = raw.")] = 0.0,
) -> None:
    """Plot one metric of several runs against training tokens, like the paper's loss-curve figures."""
    from minitron.compress.curves import plot_curves

    names = None if labels is None else [name.strip() for name in labels.split(",")]
    plot_curves(logs, names, out, metric=metric, x=x, title=title, ema=ema)
    typer.echo(f"wrote {out}")


def search(
    model: Model,
    calib: Calib,
    out: Out,
    params: Annotated[Optional[str], typer.Option(
        "--params", help="Total parameters: a count (79.7M, 4.5B) or a fraction of the teacher's (0.7).")] = None,
    active_params: Annotated[Optional[str], typer.Option(
        "--active-params", help="Parameters active per token (mixture-of-experts), the same way.")] = None,
    memory: Annotated[Optional[float], typer.Option(
        "--memory", help="GB for the weights and the KV cache of --batch sequences of --context tokens.")] = None,
    latency: Annotated[Optional[float], typer.Option(
        "--latency", help="Bytes moved per generated token relative to the teacher (e.g. 0.6).")] = None,
    context: Annotated[int, typer.Option("--context", help="Prompt tokens, for --memory and --latency.")] = 4096,
    batch: Annotated[int, typer.Option("--batch", help="Sequences decoded together, for --memory and --latency.")] = 1,
    dtype: Annotated[str, typer.Option("--dtype", help="Deployed dtype, for --memory and --latency.")] = "bfloat16",
    axes: Annotated[str, typer.Option(
        "--axes", help="Comma-separated axes to search: hidden, ffn, heads, kv_heads, layers, experts. The default "
                       "follows the paper: width before depth, heads kept.")] = "hidden,ffn",
    metric: Metric = "lm-loss",
    steps: Annotated[int, typer.Option("--steps", help="Sizes per axis, from the teacher's to a quarter.")] = 8,
    fill: Annotated[float, typer.Option(
        "--fill", help="Drop candidates using less than this fraction of their tightest budget.")] = 0.9,
    reference: Annotated[Optional[str], typer.Option(
        "--reference", help="A hand-picked target to compare with, e.g. hidden=432,ffn=992[,layers=30].")] = None,
    max_candidates: Annotated[int, typer.Option("--max-candidates", help="Score at most this many, largest first.")
                              ] = 40,
    eval_blocks: Annotated[int, typer.Option("--eval-blocks", help="Held-out blocks each candidate is scored on.")
                           ] = 32,
    distill_top: Annotated[int, typer.Option(
        "--distill-top", help="Distil this many of the best for --distill-tokens each and rank them again.")] = 0,
    distill_tokens: Annotated[Optional[int], typer.Option("--distill-tokens", help="Tokens per distillation.")
                              ] = None,
    distill_lr: Annotated[float, typer.Option("--distill-lr", help="Peak learning rate (minimum: a tenth).")] = 1e-4,
    num_samples: NumSamples = 256,
    seq_len: SeqLen = None,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    precision: Precision = "auto",
    seed: Seed = 0,
    overwrite: Overwrite = False,
):
    """Search for the best pruned student under a budget: the winner as a checkpoint in OUT, with candidates.csv
    and candidates.png beside it."""
    from minitron.compress.search import Budget
    from minitron.compress.search import search as run
    from minitron.evals.scorers import depth_scorer

    run(model, calib, out, Budget(params, active_params, memory, latency, context, batch, dtype),
        axes=tuple(a.strip() for a in axes.split(",") if a.strip()), steps=steps, fill=fill, reference=reference,
        max_candidates=max_candidates, num_samples=num_samples, eval_blocks=eval_blocks, seq_len=seq_len,
        batch_size=batch_size, distill_top=distill_top, distill_tokens=distill_tokens,
        distill={"lr": distill_lr, "min_lr": distill_lr / 10}, metric=metric,
        metric_scorer=None if metric == "lm-loss" else depth_scorer(metric), device=device,
        precision=precision, seed=seed, overwrite=overwrite)
