"""What the findings read from the runs a recipe made: validation curves, final losses, the eval runs' paired
per-item comparisons, and every final student re-scored on the held-out blocks its training validated on
(`HeldOutLosses`), so that two students compare per block, with a standard error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from minitron import stage_kinds as kinds
from minitron.compress.curves import plot_curves, read_metrics
from minitron.core.stats import direction, non_inferior, paired_difference


def val_curve(folder: Path) -> pd.DataFrame:
    df = read_metrics(folder / "metrics.jsonl")
    return df[df["split"] == "val"].reset_index(drop=True)


def final_loss(folder: Path) -> float:
    return float(val_curve(folder)["val_loss"].iloc[-1])


def final_losses(held_out: HeldOutLosses | None, seeds: list[Path]) -> list[float]:
    """Each seed's final LM loss: on the shared held-out blocks when there are some, else its logged validation."""
    return [held_out.losses(f).mean().item() if held_out else final_loss(f) for f in seeds]


def curve_table(runs: dict[str, list[Path]], held_out: HeldOutLosses | None = None) -> pd.DataFrame:
    """One row per arm: its first seed's initial and final validation LM loss (and KL to the teacher) and tokens
    trained; with several seeds, the final loss's mean and spread over them (on the held-out blocks if given)."""
    rows = []
    for label, seeds in runs.items():
        val = val_curve(seeds[0])
        row = {"run": label, "tokens": int(val["tokens"].iloc[-1]), "val_loss_initial": val["val_loss"].iloc[0],
               "val_loss_final": val["val_loss"].iloc[-1],
               "val_kl_final": val["val_kl"].iloc[-1] if "val_kl" in val else None}
        if len(seeds) > 1:
            finals = pd.Series(final_losses(held_out, seeds))
            row |= {"seeds": len(seeds), "final_mean": finals.mean(), "final_sd": finals.std()}
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


def plot_arms(runs: dict[str, list[Path]], out: Path, title: str) -> None:
    """The first seed's curve of each arm (the others' final losses are in the table)."""
    plot_curves([seeds[0] / "metrics.jsonl" for seeds in runs.values()], list(runs), out, metric="val_loss",
                title=title + (" (first seed)" if any(len(seeds) > 1 for seeds in runs.values()) else ""))


class HeldOutLosses:
    """Per-block LM losses of final checkpoints on the held-out blocks their training validated on, cached per
    model: two models compared on the same blocks give a paired difference with a standard error."""

    def __init__(self, data: str, seq_len: int, seed: int, micro_batch: int, eval_batches: int, device: str = "cpu",
                 precision: str = "auto"):
        self.data, self.seq_len, self.seed, self.device, self.precision = data, seq_len, seed, device, precision
        self.micro_batch, self.eval_batches = micro_batch, eval_batches
        self._blocks: list | None = None
        self._losses: dict[Path, object] = {}

    def losses(self, folder: Path):
        import torch

        from minitron.compress.data import load_blocks
        from minitron.core.measure import sequence_losses
        from minitron.core.model_io import load_model
        from minitron.core.precision import autocast

        if folder not in self._losses:
            model, tokenizer = load_model(folder, dtype=torch.float32, device=self.device)
            if self._blocks is None:
                val = load_blocks(self.data, tokenizer, self.seq_len, seed=self.seed).val
                self._blocks = list(val.batches(self.micro_batch, limit=self.eval_batches))
            with autocast(self.device, self.precision):  # the precision training validated in
                self._losses[folder] = sequence_losses(model, self._blocks)
        return self._losses[folder]

    def advantage(self, better: Path, worse: Path) -> tuple[float, float]:
        """Mean over blocks of loss(worse) - loss(better), and its standard error: positive when `better` is."""
        return paired_difference((self.losses(worse) - self.losses(better)).tolist())


def paired_task(task: str, base: Path, cand: Path, max_drop: float = 0.0):
    """The gate's paired per-document comparison of two eval runs on `task` (candidate - base)."""
    from minitron.evals.gate import compare_task, load_run

    base_run, cand_run = load_run(base), load_run(cand)
    metric = next(t["metric"] for t in base_run["record"]["suite_tasks"] if t["task"] == task)
    return compare_task(base_run, cand_run, task, metric, max_drop=max_drop, z=2.0)


def student_runs(folders: dict[str, Path]) -> list[tuple[Path, Path]]:
    """(width, depth) eval runs, one pair per seed: the recipe's own students, then `eval-seeds`' (if any)."""
    pairs = [(folders[kinds.EVAL.name] / "width", folders[kinds.EVAL.name] / "depth")]
    if kinds.EVAL_SEEDS.name in folders:
        retrained = folders[kinds.EVAL_SEEDS.name]
        seeds = sorted(int(run.name.rsplit("-seed", 1)[1]) for run in retrained.glob("width-seed*"))
        pairs += [(retrained / f"width-seed{s}", retrained / f"depth-seed{s}") for s in seeds]
    return pairs


def lower_loss(held_out: HeldOutLosses | None, better: list[Path], worse: list[Path]) -> tuple[str, bool | None]:
    """Whether `better` ends with the lower LM loss, seed by seed (the i-th folders of both trained under the same
    seed, so on the same data order), in words and as a verdict that holds only when every seed agrees. With
    held-out blocks, each seed is a paired comparison over the blocks with its standard error; without, the
    logged final validation losses are compared as they are."""
    if held_out is None:
        per_seed = [(final_loss(w) - final_loss(b), None) for b, w in zip(better, worse, strict=True)]
        outcomes = {delta > 0 for delta, _ in per_seed}
    else:
        per_seed = [held_out.advantage(b, w) for b, w in zip(better, worse, strict=True)]
        outcomes = {direction(delta, stderr) for delta, stderr in per_seed}
    words = [f"{delta:+.4f}" + ("" if stderr is None else f" ± {stderr:.4f}") for delta, stderr in per_seed]
    where = f"paired over {len(held_out.losses(better[0]))} blocks" if held_out else "final validation losses"
    if len(per_seed) == 1:
        text = f"; {where}: {words[0]}" if held_out else ""
    else:
        deltas = pd.Series([delta for delta, _ in per_seed])
        text = (f"; {where}, seed by seed: {', '.join(words)} (over {len(deltas)} seeds: mean {deltas.mean():+.4f}, "
                f"sd {deltas.std():.4f})")
    return text, outcomes.pop() if len(outcomes) == 1 else None


def on_par(held_out: HeldOutLosses | None, parallel: list[Path], corrected: list[Path], margin: float
            ) -> tuple[str, bool | None]:
    """Whether `parallel` ends on par with `corrected` or better, seed by seed (a non-inferiority test): its final
    LM loss exceeds `corrected`'s by less than `margin` even at two standard errors of the paired difference;
    by more than `margin` at two standard errors, it is not; in between, inconclusive. Not finding a difference
    is not evidence of parity. Without held-out blocks, the logged losses are compared with the margin."""
    if held_out is None:
        deltas = [final_loss(p) - final_loss(c) for p, c in zip(parallel, corrected, strict=True)]
        return "", all(d < margin for d in deltas)
    per_seed = [held_out.advantage(c, p) for p, c in zip(parallel, corrected, strict=True)]  # loss(p) - loss(c)
    outcomes = {non_inferior(-d, se, margin) for d, se in per_seed}
    words = ", ".join(f"{d:+.4f} ± {se:.4f}" for d, se in per_seed)
    return f"; against the teacher corrected first: {words} (margin {margin:.4f})", (
        outcomes.pop() if len(outcomes) == 1 else None)
