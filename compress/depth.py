"""Depth pruning: which layers can go, measured by removing them, and a model without them.

    minitron prune depth --model DIR --calib DATA --out DIR --num-layers 16              # scan, then drop
    minitron prune depth --model DIR --calib DATA --out DIR --drop 15-30                 # drop these (0-based)

The paper's scan (its Figures 8 and 9): for a block length k, remove each contiguous block [s, s+k) in
turn and score what remains, by LM validation loss and by downstream accuracy (any scorer: a callable
model -> float). For comparison, two non-contiguous choices of k layers: the k layers whose single
removal raises the loss least, and the k layers of lowest Block Influence (1 - cos of a layer's input and
output, from `compress.importance`). The model is loaded once; candidates are evaluated by skipping
layers in place (`layers_removed`), not by copying the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import pandas as pd
import torch
from minitron.core.arch import derive_config
from minitron.core.errors import BadInput
from minitron.core.families import check_supported
from minitron.core.measure import Scorer
from minitron.core.model_io import build_model
from tqdm.auto import tqdm


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """'15-30' or '3,5,7' (0-based, inclusive ranges) -> sorted layer indices, validated."""
    layers: set[int] = set()
    for part in spec.split(","):
        start, _, end = part.strip().partition("-")
        try:
            lo, hi = int(start), int(end or start)
        except ValueError:
            raise BadInput(f"--drop {spec!r}: expected START-END or a list like 3,5,7 (0-based layer indices)")
        if not 0 <= lo <= hi < num_layers:
            raise BadInput(f"--drop {spec!r}: layers must lie in 0..{num_layers - 1} with START <= END")
        layers.update(range(lo, hi + 1))
    if len(layers) >= num_layers:
        raise BadInput(f"--drop {spec!r} removes all {num_layers} layers; keep at least one")
    return sorted(layers)


def _set_layers(model, layers: list, config_fields: dict) -> None:
    model.model.layers = torch.nn.ModuleList(layers)
    for new_index, layer in enumerate(layers):
        layer.self_attn.layer_idx = new_index  # the KV cache is indexed by position in the stack
    for key, value in config_fields.items():
        setattr(model.config, key, value)


@contextlib.contextmanager
def layers_removed(model, drop: Iterable[int]):
    """Run `model` without the layers in `drop`, then restore it exactly."""
    original = list(model.model.layers)
    drop = set(drop)
    keep = [i for i in range(len(original)) if i not in drop]
    saved = {k: getattr(model.config, k) for k in ("num_hidden_layers", "layer_types") if hasattr(model.config, k)}
    derived = derive_config(model.config, keep_layers=keep)
    _set_layers(model, [original[i] for i in keep], {k: getattr(derived, k) for k in saved})
    try:
        yield model
    finally:
        _set_layers(model, original, saved)


def drop_layers(model, drop: Iterable[int]):
    """Return `model` without the layers in `drop`, renumbered 0..n-1 (a plain HF model: save, reload,
    generate with a KV cache). The tensors are moved, not copied; `model` must not be used afterwards."""
    check_supported(model.config)
    drop = set(drop)
    keep = [i for i in range(model.config.num_hidden_layers) if i not in drop]
    new_index = {old: new for new, old in enumerate(keep)}
    tensors = {}
    for name, param in model.named_parameters():
        parts = name.split(".")
        if parts[:2] == ["model", "layers"]:
            old = int(parts[2])
            if old in drop:
                continue
            parts[2] = str(new_index[old])
        tensors[".".join(parts)] = param.data
    if getattr(model.config, "tie_word_embeddings", False):
        tensors.pop("lm_head.weight", None)
    return build_model(derive_config(model.config, keep_layers=keep), tensors, like=model)


def layer_label(layers: list[int]) -> str:
    contiguous = layers == list(range(layers[0], layers[-1] + 1))
    return f"{layers[0]}-{layers[-1]}" if contiguous else ",".join(map(str, layers))


def scan(model, block_lengths: Iterable[int], scorers: list[Scorer], layer_influence: torch.Tensor | None = None,
         ) -> pd.DataFrame:
    """The sensitivity table: one row per removed layer set, one column per scorer.

    method 'contiguous' rows cover every block [start, start+k) for each k, and every single layer (k = 1,
    always: the single-layer losses rank the non-contiguous choice and draw Figure 8); for each k > 1, a row
    'single-layer-rank' drops the k layers whose single removal scored best on the first scorer, and a row
    'block-influence' (when `layer_influence` is given) drops the k layers of lowest Block Influence.
    """
    n = model.config.num_hidden_layers
    block_lengths = sorted(set(block_lengths))
    if not block_lengths or not all(0 < k < n for k in block_lengths):
        raise BadInput(f"block lengths must lie in 1..{n - 1}, got {block_lengths}")
    candidates = [("contiguous", k, list(range(s, s + k))) for k in sorted(set(block_lengths) | {1})
                  for s in range(n - k + 1)]
    rows = []

    def evaluate(method, k, layers):
        with layers_removed(model, layers):
            scores = {s.name: s.fn(model) for s in scorers if s.lengths is None or k in s.lengths}
        rows.append({"method": method, "block_len": k, "start": layers[0], "end": layers[-1],
                     "layers": layer_label(layers), **scores})

    for method, k, layers in tqdm(candidates, desc="depth scan", unit="block"):
        evaluate(method, k, layers)
    table = pd.DataFrame(rows)
    first = scorers[0]
    singles = table[(table.method == "contiguous") & (table.block_len == 1)]
    single_rank = singles.sort_values(first.name, ascending=not first.higher_is_better, kind="stable").start.tolist()
    for k in (k for k in block_lengths if k > 1):
        evaluate("single-layer-rank", k, sorted(single_rank[:k]))
        if layer_influence is not None:
            evaluate("block-influence", k, sorted(torch.argsort(layer_influence, stable=True)[:k].tolist()))
    return pd.DataFrame(rows)


def best_block(table: pd.DataFrame, k: int, scorer: Scorer) -> list[int]:
    """The contiguous block of length k that scores best."""
    rows = table[(table.method == "contiguous") & (table.block_len == k)]
    if rows.empty:
        raise BadInput(f"the scan holds no contiguous blocks of length {k}")
    best = rows.sort_values(scorer.name, ascending=not scorer.higher_is_better, kind="stable").iloc[0]
    return list(range(int(best.start), int(best.end) + 1))


def plot_scan(table: pd.DataFrame, scorers: list[Scorer], path, title: str = "") -> None:
    """Figures 8 and 9 of the paper: a metric after removing each block, against the block's last layer
    (1-based, as the paper numbers it); dashed lines for the non-contiguous choices."""
    import matplotlib.ticker
    from minitron.core.plots import figure

    fig = figure(figsize=(6 * len(scorers), 4))
    axes = fig.subplots(1, len(scorers), squeeze=False)
    styles = {"single-layer-rank": "--", "block-influence": ":"}
    colors = {k: f"C{i}" for i, k in enumerate(sorted(table.block_len.unique()))}  # one per length, every axis
    for ax, scorer in zip(axes[0], scorers):
        scored = table.dropna(subset=[scorer.name])  # a downstream task scores only some lengths
        for k, rows in scored[scored.method == "contiguous"].groupby("block_len"):
            ax.plot(rows.end + 1, rows[scorer.name], marker="o", ms=3, color=colors[k], label=f"remove {k} contiguous")
        for (method, k), rows in scored[scored.method != "contiguous"].groupby(["method", "block_len"]):
            ax.axhline(rows[scorer.name].iloc[0], ls=styles[method], color=colors[k], alpha=0.8,
                       label=f"remove {k} by {method} ({rows.layers.iloc[0]})")
        ax.set_xlabel("layer no. (last layer of the removed block, 1-based)")
        ax.set_ylabel(scorer.name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if scorer.name == "lm_loss":
            ax.set_yscale("log")  # removing early layers raises the loss by orders of magnitude
            ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    fig.suptitle(title or "Depth sensitivity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
