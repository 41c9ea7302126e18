"""Pruning as library calls: importance, width, depth and the depth scan, from a checkpoint folder to another.

    from minitron.core.arch import WidthTarget
    prune_width("work/smollm2/corrected", "work/width", WidthTarget(hidden_size=432, ffn_hidden_size=992),
                calib="work/smollm2/data", num_samples=8, seq_len=256)
    prune_depth("work/smollm2/corrected", "work/depth", num_layers=15, calib="work/smollm2/data")

Each call validates its arguments and the architecture before loading a weight, writes its folder atomically
(`minitron.core.records.output_dir`) with a `minitron.json` record, and refuses an existing folder unless
`overwrite`. The `minitron prune` and `minitron importance` commands map their flags onto these functions, and
`minitron run` calls them directly. A downstream metric for the depth scan comes in as a factory of
`minitron.core.measure.Scorer` (the evals package builds them: `minitron.evals.scorers.depth_scorer`), so pruning
never imports evaluation code.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from minitron.core.arch import Dims, WidthTarget, count_params, derive_config
from minitron.core.errors import BadInput
from minitron.core.gguf import local_model
from minitron.core.measure import Scorer, lm_loss_scorer
from minitron.core.model_io import load_config, load_model, save_checkpoint
from minitron.core.precision import autocast
from minitron.core.records import atomic_file, check_output_dir, output_dir, write_record

log = logging.getLogger("minitron")

RANKINGS = ("activation", "random", "magnitude")
"""How `prune_width` orders units: the paper's activation importance, or one of its baselines."""


def calibration_seq_len(config, seq_len: int | None) -> int:
    """Tokens per calibration block: `seq_len`, checked against the model's positions, or min(4096, positions)."""
    limit = getattr(config, "max_position_embeddings", None) or 4096
    if seq_len is None:
        return min(4096, limit)
    if not 1 < seq_len <= limit:
        raise BadInput(f"--seq-len {seq_len} is out of range: the model has {limit} positions")
    return seq_len


def calibration_set(calib: str | None, model_dir: str, config, seq_len: int | None, num_samples: int, seed: int):
    """Tokenize and sample the calibration set before any weight is loaded, so bad data fails fast."""
    from minitron.compress.data import calibration_blocks
    from transformers import AutoTokenizer

    if not calib:
        raise BadInput("--calib is required: pass a text file, folder, JSONL or Parquet file")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return calibration_blocks(calib, tokenizer, calibration_seq_len(config, seq_len), num_samples=num_samples,
                              seed=seed)


def load_and_estimate(model_dir: str, blocks, batch_size: int, seq_agg: str, batch_agg: str, device: str,
                      precision: str = "auto"):
    """Load `model_dir` and estimate its importance on `blocks`: -> model, tokenizer, scores."""
    from minitron.compress.importance import estimate_importance

    model, tokenizer = load_model(model_dir, device=device)
    total = -(-len(blocks) // batch_size)
    with autocast(device, precision):
        scores = estimate_importance(model, blocks.batches(batch_size), seq_agg=seq_agg, batch_agg=batch_agg,
                                     total=total)
    return model, tokenizer, scores


def importance(model: str, calib: str | None, out: str | Path, num_samples: int = 1024, seq_len: int | None = None,
               batch_size: int = 8, seq_agg: str = "mean", batch_agg: str = "l2", device: str = "cpu",
               precision: str = "auto", seed: int = 0, overwrite: bool = False) -> Path:
    """Neuron, head, channel and layer importance of `model` on `calib`, saved to `out` (.safetensors) for
    `prune_width(importance_file=...)` to reuse."""
    out = check_output_dir(out, overwrite, reads=(model, calib))
    if out.is_dir():
        raise BadInput(f"--out {out} is a folder; the scores are one file: pass a file name such as "
                       f"{out / 'importance.safetensors'}")
    model = local_model(model)
    config = load_config(model)
    blocks = calibration_set(calib, model, config, seq_len, num_samples, seed)
    _, _, scores = load_and_estimate(model, blocks, batch_size, seq_agg, batch_agg, device, precision)
    with atomic_file(out) as tmp:
        scores.save(tmp)
    log.info("importance of %d samples x %d tokens -> %s", scores.meta["num_samples"], scores.meta["seq_len"], out)
    return out


def prune_width(model: str, out: str | Path, target: WidthTarget, calib: str | None = None,
                importance_file: str | Path | None = None, ranking: str = "activation", num_samples: int = 1024,
                seq_len: int | None = None, batch_size: int = 8, seq_agg: str = "mean", batch_agg: str = "l2",
                rescale_norms: bool = True, device: str = "cpu", precision: str = "auto", seed: int = 0,
                overwrite: bool = False) -> Path:
    """Rank units (by activation importance, or a baseline `ranking`) and trim the checkpoint to `target`."""
    from minitron.compress.importance import Importance
    from minitron.compress.width import prune_width as trim

    out = check_output_dir(out, overwrite, reads=(model, calib, importance_file))
    model = local_model(model)
    config = load_config(model)
    if target == WidthTarget():
        raise BadInput("no target given: pass at least one of --hidden-size, --ffn-hidden-size, --num-heads, "
                       "--num-kv-heads, --num-experts")
    derive_config(config, target.resolve(Dims.of(config)))  # transformers validates it now, not after importance
    if ranking not in RANKINGS:
        raise BadInput(f"--ranking {ranking!r} is unknown; choose from {', '.join(RANKINGS)}")
    if ranking == "random":
        scores = Importance.random(Dims.of(config), seed)
        teacher, tokenizer = load_model(model, device=device)
    elif ranking == "magnitude":
        teacher, tokenizer = load_model(model, device=device)
        scores = Importance.magnitude(teacher)
    elif importance_file is not None:
        scores = Importance.load(importance_file)
        scores.check_matches(Dims.of(config))
        teacher, tokenizer = load_model(model, device=device)
    else:
        blocks = calibration_set(calib, model, config, seq_len, num_samples, seed)
        teacher, tokenizer, scores = load_and_estimate(model, blocks, batch_size, seq_agg, batch_agg, device, precision)
    source_params = count_params(config)
    student = trim(teacher, scores, target, rescale_norms=rescale_norms)
    with output_dir(out, overwrite) as tmp:
        save_checkpoint(student, tokenizer, tmp)
        scores.save(tmp / "importance.safetensors")
        write_record(tmp, "prune-width", seed=seed, source=str(model), calib=calib, target=target.__dict__,
                     importance=scores.meta, rescale_norms=rescale_norms,
                     params={"source": source_params, "target": count_params(student.config)})
    log.info("width-pruned %s -> %s (%.1fM -> %.1fM params)", model, out, source_params["params"] / 1e6,
             sum(p.numel() for p in student.parameters()) / 1e6)
    return out


ScorerFactory = Callable[..., Scorer]
"""Builds a Scorer from the scan's context (batches=, tokenizer=, device=): `minitron.evals.scorers`."""


def _scan(model: str, calib, num_layers: int, metric: str, metric_scorer: ScorerFactory | None,
          scan_lengths: Iterable[int], num_samples: int, seq_len, batch_size: int, device: str, precision: str,
          seed: int):
    """Load `model` and score removing each candidate block (compress.depth.scan): -> model, tokenizer, the
    table, its scorers. LM loss scores every candidate; a downstream metric (tens of seconds per candidate)
    scores only the blocks of the length being removed, as the paper's Figure 9 does."""
    from minitron.compress import depth
    from minitron.compress.importance import estimate_importance

    config = load_config(model)
    n = config.num_hidden_layers
    if metric != "lm-loss" and metric_scorer is None:
        raise BadInput(f"metric {metric!r} needs its scorer (minitron.evals.scorers.depth_scorer({metric!r}))")
    if not 0 < num_layers < n:
        raise BadInput(f"--num-layers {num_layers} must lie in 1..{n - 1} (the model has {n} layers)")
    k = n - num_layers
    lengths = {k} | set(scan_lengths)
    blocks = calibration_set(calib, model, config, seq_len, num_samples, seed)
    batches = list(blocks.batches(batch_size))
    teacher, tokenizer = load_model(model, device=device)
    context = {"batches": batches, "tokenizer": tokenizer, "device": device}
    scorers = [lm_loss_scorer(**context)]  # always scanned: it also ranks the non-contiguous choice
    if metric != "lm-loss":
        scorers.append(dataclasses.replace(metric_scorer(**context), lengths=frozenset({k})))
    with autocast(device, precision):
        influence = estimate_importance(teacher, batches, total=len(batches)).layers
        table = depth.scan(teacher, lengths, scorers, layer_influence=influence)
    return teacher, tokenizer, table, scorers


def _write_scan(folder: Path, table, scorers, model: str) -> None:
    from minitron.compress import depth

    table.to_csv(folder / "depth_scan.csv", index=False)
    depth.plot_scan(table, scorers, folder / "depth_scan.png", title=f"Depth sensitivity of {model}")


def prune_depth(model: str, out: str | Path, calib: str | None = None, num_layers: int | None = None,
                drop: str | None = None, metric: str = "lm-loss", metric_scorer: ScorerFactory | None = None,
                scan_lengths: Iterable[int] = (), num_samples: int = 1024, seq_len: int | None = None,
                batch_size: int = 8, device: str = "cpu", precision: str = "auto", seed: int = 0,
                overwrite: bool = False) -> Path:
    """Scan contiguous blocks of layers (and non-contiguous choices) and drop the best block of `n - num_layers`
    by `metric`; or drop the layers `drop` names (0-based, `15-30` or `3,5,7`) without a scan."""
    from minitron.compress import depth

    out = check_output_dir(out, overwrite, reads=(model, calib))
    model = local_model(model)
    config = load_config(model)
    n = config.num_hidden_layers
    if (num_layers is None) == (drop is None):
        raise BadInput("pass exactly one of --num-layers N (scan, then drop) or --drop START-END")
    table = None
    if drop is not None:
        layers = depth.parse_layers(drop, n)
        teacher, tokenizer = load_model(model, device=device)
    else:
        teacher, tokenizer, table, scorers = _scan(model, calib, num_layers, metric, metric_scorer, scan_lengths,
                                                   num_samples, seq_len, batch_size, device, precision, seed)
        layers = depth.best_block(table, n - num_layers, scorers[-1])
        log.info("best %s when removing layers %d-%d", scorers[-1].name, layers[0], layers[-1])
    source_params = count_params(config)
    student = depth.drop_layers(teacher, layers)
    with output_dir(out, overwrite) as tmp:
        save_checkpoint(student, tokenizer, tmp)
        if table is not None:
            _write_scan(tmp, table, scorers, model)
        write_record(tmp, "prune-depth", seed=seed, source=str(model), calib=calib, dropped_layers=layers,
                     metric=metric, params={"source": source_params, "target": count_params(student.config)})
    log.info("dropped layers %s: %d -> %d layers, written to %s", depth.layer_label(layers), n, n - len(layers), out)
    return out


def scan_depth(model: str, out: str | Path, num_layers: int, calib: str | None = None, metric: str = "lm-loss",
               metric_scorer: ScorerFactory | None = None, scan_lengths: Iterable[int] = (),
               num_samples: int = 1024, seq_len: int | None = None, batch_size: int = 8, device: str = "cpu",
               precision: str = "auto", seed: int = 0, overwrite: bool = False) -> Path:
    """The depth-sensitivity scan alone (the paper's Figures 8 and 9): depth_scan.csv and .png, nothing pruned."""
    out = check_output_dir(out, overwrite, reads=(model, calib))
    model = local_model(model)
    _, _, table, scorers = _scan(model, calib, num_layers, metric, metric_scorer, scan_lengths, num_samples,
                                 seq_len, batch_size, device, precision, seed)
    with output_dir(out, overwrite) as tmp:
        _write_scan(tmp, table, scorers, model)
        write_record(tmp, "scan-depth", seed=seed, source=str(model), calib=calib, metric=metric)
    log.info("depth scan of %d candidates -> %s", len(table), out)
    return out
