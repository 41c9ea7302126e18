"""The paper's findings, tested at a recipe's scale: a table, a plot and a verdict for each, in one folder.

    minitron run recipes/tiny.yaml         # the embedded default: writes results/tiny/ (its `findings` section)

`minitron run` calls `minitron.findings_report.write_findings` last, with the folders its stages wrote: the
training logs of every distillation run, the depth scan, the throughput report and the eval runs. Nothing here
trains; it reads, compares and draws, and re-scores the final students on their held-out blocks so that
comparisons of two students are paired, with a standard error (the depth scan's are not: it keeps no per-block
scores). Each claim is the paper's, each rule (how "held" is decided) is printed beside the numbers it was
decided on, and a claim that does not hold at this scale, or whose difference lies within the noise (two
standard errors), is reported as such.

Writes into the findings folder (atomically; it is regenerated as a whole):
- `findings.md` and `findings.csv`: every claim, the paper's figure, the rule, what was measured, held or not;
- `teacher-correction.png|csv` (Figures 4 and 5), `pruning-and-distillation.png|csv` (Figure 6),
  `width-vs-depth.png|csv` (Figure 7), `depth-sensitivity.png|csv` (Figures 8 and 9), `throughput.png|csv`
  (Figure 10), `evals.md|csv` (Table 1's columns beside ours), `width-eval-run/` (the width student's eval
  run with its per-document samples: the baseline of `minitron eval gate` in CI), the FP8 record and the
  deployment manifest;
- `minitron.json`: the verdicts and the provenance (git sha, versions, hardware, seeds).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from minitron import stage_kinds as kinds
from minitron.core.stats import direction, non_inferior
from minitron.findings_runs import (
    HeldOutLosses,
    curve_table,
    final_losses,
    lower_loss,
    on_par,
    paired_task,
    plot_arms,
    student_runs,
    val_curve,
)

log = logging.getLogger("minitron")

IN_DOMAIN_TASKS = ("minitron_stdlib_cloze", "minitron_stdlib_next_line")
"""Eval tasks that models of these sizes do above chance: the embedded tiny model's (evals/stdlib_cloze.py) and
SmolLM2-135M's (evals/stdlib_next_line.py: its teacher gets every cloze item right). The table's verdicts use
the first of them that the eval runs scored."""


@dataclass
class Verdict:
    figure: str
    claim: str
    """What the paper reports, in its words where it has them."""
    rule: str
    """How 'held' is decided from the measurements here."""
    measured: str
    held: bool | None
    """None: inconclusive, the difference lies within two standard errors of the measurement's noise."""
    testable: bool = True
    """False when the data cannot test the claim as named (`measured` says why); `held` is then None."""
    seeds: int = 0
    """How many training seeds the compared students ran under (0: nothing in the comparison was trained). With
    one, the seed-to-seed noise is not measured: the outcome says so and the tally counts it apart."""
    noise: bool = True
    """False when the measurement has no noise estimate at all: the outcome says measured, not held, and the
    tally counts it apart."""

    def __post_init__(self):
        if self.held is not None:
            self.held = bool(self.held)  # comparisons of numpy values give numpy booleans

    @property
    def outcome(self) -> str:
        if not self.testable:
            return "not testable here"
        if not self.noise and self.held is not None:
            return f"measured {'as claimed' if self.held else 'not as claimed'} (no noise estimate)"
        if self.seeds == 1 and self.held is not None:
            return f"{'held' if self.held else 'did not hold'} in one seed (seed noise not measured)"
        return {True: "held", False: "did not hold", None: "inconclusive (within noise)"}[self.held]

    @property
    def one_seed(self) -> bool:
        return self.testable and self.noise and self.seeds == 1 and self.held is not None


FP8_MARGIN = 0.02
"""The accuracy an FP8 student may lose against its BF16 self: 2 points."""
SIGNIFICANT = ", by more than two standard errors of the paired difference"


def _every(outcomes: list[bool | None]) -> bool | None:
    """A claim about every member: False if one fails, True if all hold, else inconclusive."""
    return False if False in outcomes else True if all(outcomes) else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def teacher_correction(folders: dict[str, Path], out: Path, held_out: HeldOutLosses | None = None
                       ) -> list[Verdict]:
    runs = {"pruned + distilled from the corrected teacher": kinds.seeds_of(folders, kinds.DISTILL),
            "pruned + distilled from the original teacher": kinds.seeds_of(folders, kinds.DISTILL_ORIGINAL),
            "original pruned, teacher corrected in parallel": kinds.seeds_of(folders, kinds.DISTILL_PARALLEL)}
    table = curve_table(runs, held_out)
    correction = val_curve(folders[kinds.CORRECT.name])
    table.loc["teacher: before correction", "val_loss_final"] = correction["val_loss"].iloc[0]
    table.loc["teacher: after correction", "val_loss_final"] = correction["val_loss"].iloc[-1]
    table.to_csv(out / "teacher-correction.csv", float_format="%.4f")
    plot_arms(runs, out / "teacher-correction.png", "Teacher correction (Figures 4 and 5)")
    corrected, original, parallel = (_mean(final_losses(held_out, seeds)) for seeds in runs.values())
    gap = original - corrected
    fig4, fig4_held = lower_loss(held_out, *list(runs.values())[:2])
    fig5, fig5_held = lower_loss(held_out, runs["original pruned, teacher corrected in parallel"],
                                  runs["pruned + distilled from the original teacher"])
    par, par_held = on_par(held_out, runs["original pruned, teacher corrected in parallel"],
                          runs["pruned + distilled from the corrected teacher"], gap / 2)
    seeds = len(runs["pruned + distilled from the corrected teacher"])
    return [
        Verdict("Figure 4", "distilling from the corrected teacher beats distilling from the original one",
                f"the student's final LM loss is lower with the corrected teacher{SIGNIFICANT}",
                f"{corrected:.4f} (corrected) vs {original:.4f} (original){fig4}", fig4_held, seeds=seeds),
        Verdict("Figure 5", "teacher correction can run in parallel with distillation and performs on par with "
                            "a fully corrected teacher",
                f"correcting in parallel beats the uncorrected teacher{SIGNIFICANT}, and ends on par with the "
                "teacher corrected first or better: its loss above that one's by less than half of Figure 4's gap, "
                "even at two standard errors of the paired difference",
                f"{parallel:.4f} (parallel) vs {original:.4f} (original), {corrected:.4f} (corrected first){fig5}"
                f"{par}", False if fig5_held is False or par_held is False or gap <= 0 else (
                    None if fig5_held is None or par_held is None else True), seeds=seeds),
    ]


def _starts_lower(better: list[Path], worse: list[Path]) -> bool:
    """Whether `better`'s first validation loss is below `worse`'s under every seed."""
    return all(val_curve(b)["val_loss"].iloc[0] < val_curve(w)["val_loss"].iloc[0] for b, w in zip(better, worse))


def pruning_and_distillation(folders: dict[str, Path], out: Path, held_out: HeldOutLosses | None = None
                             ) -> list[Verdict]:
    ours = "pruning + KD (ours)"
    runs = {"random init + KD": kinds.seeds_of(folders, kinds.DISTILL_RANDOM_INIT),
            "random pruning + KD": kinds.seeds_of(folders, kinds.DISTILL_RANDOM_PRUNING),
            "pruning + LM loss": kinds.seeds_of(folders, kinds.TRAIN_LM_LOSS),
            ours: kinds.seeds_of(folders, kinds.DISTILL)}
    table = curve_table(runs, held_out)
    table.to_csv(out / "pruning-and-distillation.csv", float_format="%.4f")
    plot_arms(runs, out / "pruning-and-distillation.png", "Pruning and distillation vs baselines (Figure 6)")
    final = {label: _mean(final_losses(held_out, seeds)) for label, seeds in runs.items()}
    initial = table["val_loss_initial"]
    teacher = val_curve(folders[kinds.CORRECT.name])["val_loss"].iloc[-1]
    init, init_held = lower_loss(held_out, runs[ours], runs["random init + KD"])
    rand, rand_held = lower_loss(held_out, runs[ours], runs["random pruning + KD"])
    lm, lm_held = lower_loss(held_out, runs[ours], runs["pruning + LM loss"])
    seeds = len(runs[ours])
    return [
        Verdict("Figure 6", "pruning gives a significantly better starting point than random initialization",
                f"lower LM validation loss than random init + KD before training (every seed), and after "
                f"it{SIGNIFICANT}",
                f"initial {initial[ours]:.4f} vs {initial['random init + KD']:.4f}, "
                f"final {final[ours]:.4f} vs {final['random init + KD']:.4f}{init}",
                init_held if _starts_lower(runs[ours], runs["random init + KD"]) else False,  # a worse start fails
                seeds=seeds),
        Verdict("Figure 6", "importance-based pruning beats pruning at random",
                f"lower final LM loss than random pruning + KD (a new random ranking per seed){SIGNIFICANT}",
                f"{final[ours]:.4f} vs {final['random pruning + KD']:.4f}{rand}", rand_held, seeds=seeds),
        Verdict("Figure 6", "distillation-based training outperforms conventional (LM loss) training",
                f"lower final LM loss than pruning + LM loss at the same token budget{SIGNIFICANT}",
                f"{final[ours]:.4f} vs {final['pruning + LM loss']:.4f}{lm} (the teacher that KD imitates: "
                f"{teacher:.4f})", lm_held, seeds=seeds),
    ]


def pruning_one_shot(folders: dict[str, Path], out: Path, held_out: HeldOutLosses | None = None
                     ) -> list[Verdict]:
    """Importance against random (one ranking per seed) and weight-magnitude ranking right after pruning, before
    any training: the held-out blocks' noise, and the random draws'."""
    if held_out is None:
        return []
    rankings = {"importance (activations)": [kinds.PRUNE.name], "random": kinds.seeds_of(folders, kinds.PRUNE_RANDOM),
                "weight magnitude": [kinds.PRUNE_MAGNITUDE.name] if kinds.PRUNE_MAGNITUDE.name in folders else []}
    rankings = {label: [folders[n] if isinstance(n, str) else n for n in names]
                for label, names in rankings.items() if names}
    losses = {label: _mean(final_losses(held_out, seeds)) for label, seeds in rankings.items()}
    pd.DataFrame({"ranking": list(losses), "held_out_loss": list(losses.values()),
                  "draws": [len(seeds) for seeds in rankings.values()]}).to_csv(
        out / "pruning-one-shot.csv", index=False, float_format="%.4f")
    ours = rankings["importance (activations)"][0]
    verdicts = []
    for label in [label for label in rankings if label != "importance (activations)"]:
        text, held = lower_loss(held_out, [ours] * len(rankings[label]), rankings[label])
        verdicts.append(Verdict(
            "Figure 6", f"importance-based pruning beats pruning by {label} ranking (here before any distillation)",
            f"the width-pruned student's held-out LM loss right after pruning is lower with the importance ranking "
            f"than with the {label} one{SIGNIFICANT}" + (" (for each random ranking)" if label == "random" else ""),
            f"{losses['importance (activations)']:.4f} vs {losses[label]:.4f}{text}", held))
    return verdicts


def _params(folder: Path) -> int:
    return json.loads((folder / "minitron.json").read_text())["params"]["target"]["params"]


def width_vs_depth(folders: dict[str, Path], out: Path, held_out: HeldOutLosses | None = None
                   ) -> list[Verdict]:
    params = {"width": _params(folders[kinds.PRUNE.name]), "depth": _params(folders[kinds.PRUNE_DEPTH.name])}
    runs = {f"width-pruned ({params['width'] / 1e6:.2f}M params)": kinds.seeds_of(folders, kinds.DISTILL),
            f"depth-pruned ({params['depth'] / 1e6:.2f}M params)": kinds.seeds_of(folders, kinds.DISTILL_DEPTH)}
    table = curve_table(runs, held_out)
    table["params"] = list(params.values())
    table.to_csv(out / "width-vs-depth.csv", float_format="%.4f")
    plot_arms(runs, out / "width-vs-depth.png", "Width vs depth pruning at the same size (Figure 7)")
    width_runs, depth_runs = runs.values()
    curves = [(val_curve(w)["val_loss"].to_numpy(), val_curve(d)["val_loss"].to_numpy())
              for w, d in zip(width_runs, depth_runs)]
    everywhere = all(len(w) == len(d) and (w < d).all() for w, d in curves)
    final, final_held = lower_loss(held_out, width_runs, depth_runs)
    width, depth = curves[0]
    return [Verdict("Figure 7", "width pruning starts from a lower loss and consistently outperforms depth pruning "
                                "at the same parameter count",
                    f"the width-pruned student's LM validation loss is lower at every validation point (every "
                    f"seed), and at the end{SIGNIFICANT}",
                    f"initial {width[0]:.4f} vs {depth[0]:.4f}, "
                    f"final {_mean(final_losses(held_out, width_runs)):.4f} vs "
                    f"{_mean(final_losses(held_out, depth_runs)):.4f}{final} "
                    f"({params['width'] / 1e6:.2f}M vs {params['depth'] / 1e6:.2f}M params)",
                    final_held if everywhere else False, seeds=len(width_runs))]


def depth_sensitivity(folders: dict[str, Path], out: Path, held_out: HeldOutLosses | None = None
                      ) -> list[Verdict]:
    # the findings' own scan, if the recipe has one
    scanned = folders.get(kinds.SCAN_DEPTH.name, folders[kinds.PRUNE_DEPTH.name])
    scan = pd.read_csv(scanned / "depth_scan.csv")
    scan.to_csv(out / "depth-sensitivity.csv", index=False, float_format="%.4f")
    shutil.copy(scanned / "depth_scan.png", out / "depth-sensitivity.png")
    contiguous = scan[scan.method == "contiguous"]
    singles = contiguous[contiguous.block_len == 1].set_index("start")["lm_loss"]
    first, last = singles.index.min(), singles.index.max()
    middle = singles.drop([first, last])
    k = int(scan[scan.method == "single-layer-rank"].block_len.max())  # the pruned block's length
    blocks = contiguous[contiguous.block_len == k]
    spread = scan[(scan.method == "single-layer-rank") & (scan.block_len == k)].iloc[0]
    best_by_loss = blocks.loc[blocks.lm_loss.idxmin()]
    # compress.depth.layer_label writes a contiguous set as "a-b", any other as "a,b,...": a "non-contiguous"
    # choice that is one block compares the contiguous family with itself, which tests nothing
    untestable = None if "," in spread.layers else (
        f"not testable: the {k} layers whose single removal costs least form one block (layers {spread.layers})")
    verdicts = [
        Verdict("Figure 8", "the layers at the beginning and end are the most important",
                "removing the first or the last layer alone raises the LM loss more than removing any middle layer "
                "(no noise estimate: the scan keeps no per-block losses)",
                f"first {singles[first]:.4f}, last {singles[last]:.4f}, middle layers at most {middle.max():.4f}",
                bool(min(singles[first], singles[last]) > middle.max()), noise=False),
        Verdict("Figure 8", "removing non-contiguous layers can give an even better LM loss",
                f"the {k} layers whose single removal costs least ({spread.layers}) give a lower LM loss than "
                f"the best contiguous block of {k} (no noise estimate)",
                untestable or f"{spread.lm_loss:.4f} vs {best_by_loss.lm_loss:.4f} (layers {best_by_loss.layers})",
                None if untestable else bool(spread.lm_loss < best_by_loss.lm_loss), testable=not untestable,
                noise=False),
    ]
    accuracy = [c for c in scan.columns if c not in ("method", "block_len", "start", "end", "layers", "lm_loss")]
    if accuracy and untestable:
        verdicts.append(Verdict("Figure 9", "that does not hold for downstream accuracy: a contiguous block keeps "
                                            "more of it", f"the best contiguous block of {k} against the "
                                            f"non-contiguous {k} layers on {accuracy[0]}", untestable, None,
                                testable=False))
    elif accuracy:
        metric = accuracy[0]
        best = blocks.loc[blocks[metric].idxmax()]
        delta, items = best[metric] - spread[metric], _items(folders, f"minitron_{metric}")
        # the scan keeps no per-item scores, so the noise is that of two independent accuracies on `items` items
        stderr = math.sqrt(sum(a * (1 - a) for a in (best[metric], spread[metric])) / items) if items else 0.0
        verdicts.append(Verdict(
            "Figure 9", "that does not hold for downstream accuracy: a contiguous block keeps more of it",
            f"the best contiguous block of {k} keeps a higher {metric} accuracy than the non-contiguous {k} layers, "
            "by more than two standard errors",
            f"{best[metric]:.3f} (layers {best.layers}) vs {spread[metric]:.3f} (layers {spread.layers}), "
            f"{delta:+.3f} ± {stderr:.3f}" + (f" over {items} items" if items else "")
            + (f"; LM loss would remove layers {best_by_loss.layers} ({best_by_loss[metric]:.3f})"
               if best_by_loss.layers != best.layers else "; LM loss picks the same block"),
            direction(delta, stderr) if items else bool(delta > 0)))
    return verdicts


def _items(folders: dict[str, Path], task: str) -> int:
    """How many items the eval runs scored on `task` (0 when there is no such run)."""
    if kinds.EVAL.name not in folders:
        return 0
    samples = folders[kinds.EVAL.name] / "width" / "samples" / f"{task}.jsonl"
    return len(samples.read_text().splitlines()) if samples.is_file() else 0


def throughput(folders: dict[str, Path], out: Path, held_out: HeldOutLosses | None = None
               ) -> list[Verdict]:
    report = folders[kinds.BENCH.name] / "report"
    speedups = pd.read_csv(report / "speedup.csv").set_index("label")
    speedups.to_csv(out / "throughput.csv", float_format="%.3f")
    shutil.copy(report / "figure10.png", out / "throughput.png")
    depth, width = speedups.loc["depth"], speedups.loc["width"]
    points = pd.read_csv(report / "points.csv")
    ranges = {(label, point): (row.req_s_min, row.req_s_max) for point, rows in points.groupby("isl_osl")
              for label, row in rows.set_index("label").iterrows()}
    grid = sorted(points.isl_osl.unique())
    # the repeats' range at every point is the noise: the order must hold beyond it, point by point
    apart = [ranges[("depth", p)][0] > ranges[("width", p)][1] and ranges[("width", p)][0] > ranges[("teacher", p)][1]
             for p in grid]
    ordered = bool(depth.avg_speedup > width.avg_speedup > 1)
    return [Verdict("Figure 10", "the depth-pruned student is the fastest (2.7x the teacher), the width-pruned "
                                 "one next (1.8x)",
                    "measured requests/s: depth > width > teacher at every ISL/OSL point, each beyond the range "
                    "(min to max) of its repeats; only the order is tested, not the paper's factors",
                    f"depth {depth.avg_speedup:.2f}x (ideal {depth.avg_ideal_bytes:.2f}x by bytes, "
                    f"{depth.avg_ideal_flops:.2f}x by FLOPs), width {width.avg_speedup:.2f}x (ideal "
                    f"{width.avg_ideal_bytes:.2f}x, {width.avg_ideal_flops:.2f}x); the order beyond the repeats' "
                    f"range at {sum(apart)} of {len(grid)} points",
                    True if all(apart) else (None if ordered else False))]


def _in_domain_task(folders: dict[str, Path]) -> str | None:
    scored = folders[kinds.EVAL.name] / "width" / "samples"
    return next((task for task in IN_DOMAIN_TASKS if (scored / f"{task}.jsonl").is_file()), None)


def evals(folders: dict[str, Path], out: Path, held_out: HeldOutLosses | None = None
          ) -> list[Verdict]:
    table_dir = folders[kinds.EVAL.name] / "table"
    if (folders[kinds.EVAL.name] / "width").is_dir():  # the width student's whole run: a CI gate's baseline
        shutil.copytree(folders[kinds.EVAL.name] / "width", out / "width-eval-run")
    shutil.copy(table_dir / "table.csv", out / "evals.csv")
    shutil.copy(table_dir / "table.md", out / "evals.md")
    task = _in_domain_task(folders)
    if task is None:
        return []
    runs = student_runs(folders)
    per_seed = [paired_task(task, depth, width) for width, depth in runs]
    outcomes = {direction(c.delta, c.stderr) for c in per_seed}
    first = per_seed[0]
    measured = f"{100 * first.candidate:.1f} vs {100 * first.baseline:.1f} "
    if len(per_seed) == 1:
        measured += f"({100 * first.delta:+.1f} ± {100 * first.stderr:.1f} points over {first.paired} items)"
    else:
        deltas = pd.Series([100 * c.delta for c in per_seed])
        measured += (f"(first seed); paired over {first.paired} items, seed by seed: "
                     + ", ".join(f"{100 * c.delta:+.1f} ± {100 * c.stderr:.1f}" for c in per_seed)
                     + f" points (over {len(per_seed)} seeds: mean {deltas.mean():+.1f}, sd {deltas.std():.1f})")
    if len(per_seed) > 1:  # each seed's accuracies; the width column's sd is a gate's `--retrain-sd`
        pd.DataFrame([{"runs": f"{width.name}, {depth.name}", "width": 100 * c.candidate, "depth": 100 * c.baseline,
                       "width - depth": 100 * c.delta, "stderr": 100 * c.stderr}
                      for (width, depth), c in zip(runs, per_seed)]
                     ).to_csv(out / "evals-seeds.csv", index=False, float_format="%.2f")
    verdicts = [Verdict("Table 1", "at the same size the width-pruned student is more accurate than the "
                                   "depth-pruned one (4B-Width above 4B-Depth on 8 of 9 benchmarks)",
                        f"width above depth on {task} by more than two standard errors of the paired per-item "
                        "difference, under every seed (the suite's other tasks are at chance at this scale)",
                        measured, outcomes.pop() if len(outcomes) == 1 else None, seeds=len(per_seed))]
    if (folders[kinds.EVAL.name] / "width-fp8").is_dir():
        runs = folders[kinds.EVAL.name]
        gates = {s: paired_task(task, runs / s, runs / f"{s}-fp8") for s in ("width", "depth")}
        verdicts.append(Verdict(
            "Table 1 / Figure 10", "the students deploy in FP8 (the paper reports FP8 throughput, not its accuracy)",
            f"each FP8 (fake-quantized) student is non-inferior to its BF16 self on {task}: its drop stays under "
            f"{100 * FP8_MARGIN:g} points even at two standard errors of the paired difference (a drop that cannot "
            "be told from zero yet could exceed the margin is inconclusive, not held)",
            ", ".join(f"{s} {100 * g.baseline:.1f} -> {100 * g.candidate:.1f} ({100 * g.delta:+.1f} ± "
                      f"{100 * g.stderr:.1f})" for s, g in gates.items()),
            _every([non_inferior(g.delta, g.stderr, FP8_MARGIN) for g in gates.values()])))
    return verdicts


def deployment(folders: dict[str, Path], out: Path, held_out: HeldOutLosses | None = None
               ) -> list[Verdict]:
    """The FP8 checkpoint's record and the deployment folder's manifest, copied beside the findings."""
    for stage, name, copy in ((kinds.QUANTIZE.name, "minitron.json", "fp8-quantize-record.json"),
                              (kinds.DEPLOY.name, "manifest.json", "deploy-manifest.json")):
        if stage in folders and (folders[stage] / name).is_file():
            shutil.copy(folders[stage] / name, out / copy)
    return []


