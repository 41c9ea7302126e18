"""Loss curves of distillation runs, like Figures 4-7 of the Minitron paper (validation loss vs tokens).

    minitron plot runs/width/metrics.jsonl runs/depth/metrics.jsonl --out curves.png            # val_loss
    minitron plot runs/*/metrics.jsonl --out kd.png --metric kd --x step --ema 0.9 --labels width,depth

    from minitron.compress.curves import plot_curves, read_metrics
    df = read_metrics("runs/width/metrics.jsonl")
    plot_curves([Path("runs/width/metrics.jsonl")], None, Path("curves.png"), metric="val_kl")

The log format, `metrics.jsonl`, one JSON object per line (this schema is fixed; training writes it):

    {"split": "train", "step": int, "tokens": int, "lr": float, "loss": float, "kd": float|null,
     "lm": float|null, "grad_norm": float, "tokens_per_s": float}
    {"split": "val", "step": int, "tokens": int, "val_loss": float, "val_kl": float|null}

`tokens` counts training tokens seen so far, so runs with different batch sizes share an x axis. A resumed
run appends from its checkpoint's step, repeating steps already logged; the last line of each (split, step)
wins, since it is the one the surviving run produced.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from minitron.core.errors import BadInput
from minitron.core.plots import figure
from minitron.core.records import read_jsonl

# metric -> (split whose lines carry it, y-axis label)
METRICS = {
    "val_loss": ("val", "validation LM loss"),
    "val_kl": ("val", "validation KL(teacher || student)"),
    "loss": ("train", "training loss"),
    "kd": ("train", "training KD loss"),
    "lm": ("train", "training LM loss"),
    "grad_norm": ("train", "gradient norm"),
    "lr": ("train", "learning rate"),
    "tokens_per_s": ("train", "throughput (tokens/s)"),
}
X_AXES = ("tokens", "step")


def read_metrics(path) -> pd.DataFrame:
    """One row per (split, step), sorted by split then step; a repeated (split, step) keeps its last line.

    A final line without a newline that does not parse is skipped: it is a record the training process is
    still writing, and plotting a live run should not fail on it. A bad line anywhere else is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"metrics log {path} does not exist")
    records = read_jsonl(path, "metrics record")
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict) or record.get("split") not in ("train", "val") or "step" not in record:
            raise BadInput(f"{path}: record {number} is not a metrics record: it needs a split (train or val) and "
                           "a step")
    if not records:
        raise BadInput(f"metrics log {path} is empty")
    df = pd.DataFrame.from_records(records)
    df = df.drop_duplicates(subset=["split", "step"], keep="last")
    return df.sort_values(["split", "step"], kind="stable").reset_index(drop=True)


def available_metrics(df: pd.DataFrame) -> list[str]:
    """The known metrics with at least one value in the lines of their split."""
    return [m for m, (split, _) in METRICS.items()
            if m in df.columns and df.loc[df["split"] == split, m].notna().any()]


def _series(df: pd.DataFrame, path: Path, metric: str, x: str) -> pd.DataFrame:
    if metric not in available_metrics(df):
        have = ", ".join(available_metrics(df)) or "none"
        raise BadInput(f"{path} has no values for metric {metric!r}; it has: {have}")
    rows = df[(df["split"] == METRICS[metric][0]) & df[metric].notna()]
    if x not in rows.columns or rows[x].isna().any():
        raise BadInput(f"{path}: some {METRICS[metric][0]} lines lack {x!r}, needed for the x axis")
    return rows[[x, metric]]


def _human(value: float, _pos=None) -> str:
    """1200000 -> 1.2M: token counts span 1e6-1e12, where plain ticks are unreadable."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


def plot_curves(logs: list[Path], labels: list[str] | None, out: Path, metric: str = "val_loss",
                x: str = "tokens", title: str = "", ema: float = 0.0) -> None:
    """One line per log, `metric` against `x` ("tokens" or "step"), written as a PNG to `out`.

    labels default to each log's folder name (runs/<name>/metrics.jsonl). Validation metrics are drawn
    with markers, since evaluations are sparse. ema in [0, 1) smooths training metrics: the raw curve is
    drawn faintly under a bias-corrected exponential moving average with that weight on the past (0.9 is
    TensorBoard-like); validation points are already averages over a whole set and are never smoothed.
    Every log is read and checked before anything is drawn, so a bad one fails without a partial figure.
    """
    if metric not in METRICS:
        raise BadInput(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if x not in X_AXES:
        raise BadInput(f"unknown x axis {x!r}; choose from {', '.join(X_AXES)}")
    if not 0.0 <= ema < 1.0:
        raise BadInput(f"ema must be in [0, 1), got {ema}")
    if not logs:
        raise BadInput("no metrics logs given")
    logs = [Path(p) for p in logs]
    if labels is None:
        labels = [p.resolve().parent.name for p in logs]
    if len(labels) != len(logs):
        raise BadInput(f"{len(labels)} labels for {len(logs)} logs")
    curves = [_series(read_metrics(p), p, metric, x) for p in logs]

    from matplotlib.ticker import FuncFormatter

    split, ylabel = METRICS[metric]
    fig = figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for label, rows, color in zip(labels, curves, (f"C{i}" for i in range(len(curves)))):
        if split == "val":
            ax.plot(rows[x], rows[metric], marker="o", markersize=3, color=color, label=label)
        elif ema:
            ax.plot(rows[x], rows[metric], color=color, alpha=0.25, linewidth=0.8)
            smooth = rows[metric].ewm(alpha=1.0 - ema, adjust=True).mean()
            ax.plot(rows[x], smooth, color=color, label=label)
        else:
            ax.plot(rows[x], rows[metric], color=color, label=label)
    ax.set_xlabel("training tokens" if x == "tokens" else "step")
    if x == "tokens":
        ax.xaxis.set_major_formatter(FuncFormatter(_human))
    ax.set_ylabel(ylabel + (f" (EMA {ema:g})" if ema and split == "train" else ""))
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, format="png")
