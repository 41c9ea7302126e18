"""The paper's findings, tested at a recipe's scale: a table, a plot and a verdict for each, in one folder.

    minitron run recipes/tiny.yaml         # the embedded default: writes results/tiny/ (its `findings` section)

`minitron run` calls `write_findings` last, with the folders its stages wrote: the training logs of every
distillation run, the depth scan, the throughput report and the eval runs. Nothing here trains or measures;
it reads, compares and draws. Each claim is the paper's, each rule (how "held" is decided) is printed beside
the numbers it was decided on, and a claim that does not hold at this scale is reported as such.

Writes into the findings folder (atomically; it is regenerated as a whole):
- `findings.md` and `findings.csv`: every claim, the paper's figure, the rule, what was measured, held or not;
- `teacher-correction.png|csv` (Figures 4 and 5), `pruning-and-distillation.png|csv` (Figure 6),
  `width-vs-depth.png|csv` (Figure 7), `depth-sensitivity.png|csv` (Figures 8 and 9), `throughput.png|csv`
  (Figure 10), `evals.md|csv` (Table 1's columns beside ours);
- `minitron.json`: the verdicts and the provenance (git sha, versions, hardware, seeds).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from compress.checkpoint import output_dir, write_record
from compress.curves import plot_curves, read_metrics

log = logging.getLogger("minitron")

IN_DOMAIN_TASK = "minitron_stdlib_cloze"
"""The one eval task a model of this size does above chance (evals/stdlib_cloze.py); the table's verdicts use it."""


@dataclass
class Verdict:
    figure: str
    claim: str
    """What the paper reports, in its words where it has them."""
    rule: str
    """How 'held' is decided from the measurements here."""
    measured: str
    held: bool


def _val_curve(folder: Path) -> pd.DataFrame:
    df = read_metrics(folder / "metrics.jsonl")
    return df[df["split"] == "val"].reset_index(drop=True)


def _curve_table(runs: dict[str, Path]) -> pd.DataFrame:
    """One row per run: initial and final validation LM loss (and KL to the teacher), tokens trained."""
    rows = []
    for label, folder in runs.items():
        val = _val_curve(folder)
        rows.append({"run": label, "tokens": int(val["tokens"].iloc[-1]), "val_loss_initial": val["val_loss"].iloc[0],
                     "val_loss_final": val["val_loss"].iloc[-1],
                     "val_kl_final": val["val_kl"].iloc[-1] if "val_kl" in val else None})
    return pd.DataFrame(rows).set_index("run")


def _plot(runs: dict[str, Path], out: Path, title: str) -> None:
    plot_curves([folder / "metrics.jsonl" for folder in runs.values()], list(runs), out, metric="val_loss",
                title=title)


def teacher_correction(folders: dict[str, Path], out: Path) -> list[Verdict]:
    runs = {"pruned + distilled from the corrected teacher": folders["distill"],
            "pruned + distilled from the original teacher": folders["distill-original"],
            "original pruned, teacher corrected in parallel": folders["distill-parallel"]}
    table = _curve_table(runs)
    correction = _val_curve(folders["correct"])
    table.loc["teacher: before correction", "val_loss_final"] = correction["val_loss"].iloc[0]
    table.loc["teacher: after correction", "val_loss_final"] = correction["val_loss"].iloc[-1]
    table.to_csv(out / "teacher-correction.csv", float_format="%.4f")
    _plot(runs, out / "teacher-correction.png", "Teacher correction (Figures 4 and 5)")
    corrected, original, parallel = table["val_loss_final"].iloc[:3]
    gap = original - corrected
    return [
        Verdict("Figure 4", "distilling from the corrected teacher beats distilling from the original one",
                "the student's final LM validation loss is lower with the corrected teacher",
                f"{corrected:.4f} (corrected) vs {original:.4f} (original)", bool(corrected < original)),
        Verdict("Figure 5", "teacher correction can run in parallel with distillation and recover the accuracy",
                "correcting in parallel closes at least half of Figure 4's gap (original - corrected)",
                f"{parallel:.4f} (parallel) vs {original:.4f} (original), {corrected:.4f} (corrected first)",
                bool(gap > 0 and original - parallel >= gap / 2)),
    ]


def pruning_and_distillation(folders: dict[str, Path], out: Path) -> list[Verdict]:
    runs = {"random init + KD": folders["distill-random-init"],
            "random pruning + KD": folders["distill-random-pruning"],
            "pruning + LM loss": folders["train-lm-loss"], "pruning + KD (ours)": folders["distill"]}
    table = _curve_table(runs)
    table.to_csv(out / "pruning-and-distillation.csv", float_format="%.4f")
    _plot(runs, out / "pruning-and-distillation.png", "Pruning and distillation vs baselines (Figure 6)")
    final, initial = table["val_loss_final"], table["val_loss_initial"]
    ours = "pruning + KD (ours)"
    return [
        Verdict("Figure 6", "pruning gives a significantly better starting point than random initialization",
                "lower LM validation loss than random init + KD, both before training and after",
                f"initial {initial[ours]:.4f} vs {initial['random init + KD']:.4f}, "
                f"final {final[ours]:.4f} vs {final['random init + KD']:.4f}",
                bool(initial[ours] < initial["random init + KD"] and final[ours] < final["random init + KD"])),
        Verdict("Figure 6", "importance-based pruning beats pruning at random",
                "lower final LM validation loss than random pruning + KD",
                f"{final[ours]:.4f} vs {final['random pruning + KD']:.4f}",
                bool(final[ours] < final["random pruning + KD"])),
        Verdict("Figure 6", "distillation-based training outperforms conventional (LM loss) training",
                "lower final LM validation loss than pruning + LM loss at the same token budget",
                f"{final[ours]:.4f} vs {final['pruning + LM loss']:.4f}",
                bool(final[ours] < final["pruning + LM loss"])),
    ]


def _params(folder: Path) -> int:
    return json.loads((folder / "minitron.json").read_text())["params"]["target"]["params"]


def width_vs_depth(folders: dict[str, Path], out: Path) -> list[Verdict]:
    params = {"width": _params(folders["prune"]), "depth": _params(folders["prune-depth"])}
    runs = {f"width-pruned ({params['width'] / 1e6:.2f}M params)": folders["distill"],
            f"depth-pruned ({params['depth'] / 1e6:.2f}M params)": folders["distill-depth"]}
    table = _curve_table(runs)
    table["params"] = list(params.values())
    table.to_csv(out / "width-vs-depth.csv", float_format="%.4f")
    _plot(runs, out / "width-vs-depth.png", "Width vs depth pruning at the same size (Figure 7)")
    width, depth = (_val_curve(f)["val_loss"].to_numpy() for f in runs.values())
    return [Verdict("Figure 7", "width pruning starts from a lower loss and consistently outperforms depth pruning "
                                "at the same parameter count",
                    "the width-pruned student's LM validation loss is lower at every validation point",
                    f"initial {width[0]:.4f} vs {depth[0]:.4f}, final {width[-1]:.4f} vs {depth[-1]:.4f} "
                    f"({params['width'] / 1e6:.2f}M vs {params['depth'] / 1e6:.2f}M params)",
                    bool(len(width) == len(depth) and (width < depth).all()))]


def depth_sensitivity(folders: dict[str, Path], out: Path) -> list[Verdict]:
    scan = pd.read_csv(folders["prune-depth"] / "depth_scan.csv")
    scan.to_csv(out / "depth-sensitivity.csv", index=False, float_format="%.4f")
    shutil.copy(folders["prune-depth"] / "depth_scan.png", out / "depth-sensitivity.png")
    contiguous = scan[scan.method == "contiguous"]
    singles = contiguous[contiguous.block_len == 1].set_index("start")["lm_loss"]
    first, last = singles.index.min(), singles.index.max()
    middle = singles.drop([first, last])
    k = int(scan[scan.method == "single-layer-rank"].block_len.max())  # the pruned block's length
    blocks = contiguous[contiguous.block_len == k]
    spread = scan[(scan.method == "single-layer-rank") & (scan.block_len == k)].iloc[0]
    best_by_loss = blocks.loc[blocks.lm_loss.idxmin()]
    verdicts = [
        Verdict("Figure 8", "the layers at the beginning and end are the most important",
                "removing the first or the last layer alone raises the LM loss more than removing any middle layer",
                f"first {singles[first]:.4f}, last {singles[last]:.4f}, middle layers at most {middle.max():.4f}",
                bool(min(singles[first], singles[last]) > middle.max())),
        Verdict("Figure 8", "removing non-contiguous layers can give an even better LM loss",
                f"the {k} layers whose single removal costs least ({spread.layers}) give a lower LM loss than "
                f"the best contiguous block of {k}",
                f"{spread.lm_loss:.4f} vs {best_by_loss.lm_loss:.4f} (layers {best_by_loss.layers})",
                bool(spread.lm_loss < best_by_loss.lm_loss)),
    ]
    accuracy = [c for c in scan.columns if c not in ("method", "block_len", "start", "end", "layers", "lm_loss")]
    if accuracy:
        metric = accuracy[0]
        best = blocks.loc[blocks[metric].idxmax()]
        verdicts.append(Verdict(
            "Figure 9", "that does not hold for downstream accuracy: a contiguous block keeps more of it",
            f"the best contiguous block of {k} keeps a higher {metric} accuracy than the non-contiguous {k} layers",
            f"{best[metric]:.3f} (layers {best.layers}) vs {spread[metric]:.3f} (layers {spread.layers})",
            bool(best[metric] > spread[metric])))
    return verdicts


def throughput(folders: dict[str, Path], out: Path) -> list[Verdict]:
    report = folders["bench"] / "report"
    speedups = pd.read_csv(report / "speedup.csv").set_index("label")
    speedups.to_csv(out / "throughput.csv", float_format="%.3f")
    shutil.copy(report / "figure10.png", out / "throughput.png")
    depth, width = speedups.loc["depth"], speedups.loc["width"]
    return [Verdict("Figure 10", "the depth-pruned student is the fastest (2.7x the teacher), the width-pruned "
                                 "one next (1.8x)",
                    "measured speedup over the teacher: depth > width > 1 (the same backend and points)",
                    f"depth {depth.avg_speedup:.2f}x (ideal {depth.avg_ideal_bytes:.2f}x by bytes, "
                    f"{depth.avg_ideal_flops:.2f}x by FLOPs), width {width.avg_speedup:.2f}x (ideal "
                    f"{width.avg_ideal_bytes:.2f}x, {width.avg_ideal_flops:.2f}x)",
                    bool(depth.avg_speedup > width.avg_speedup > 1))]


def evals(folders: dict[str, Path], out: Path) -> list[Verdict]:
    table_dir = folders["eval"] / "table"
    shutil.copy(table_dir / "table.csv", out / "evals.csv")
    shutil.copy(table_dir / "table.md", out / "evals.md")
    table = pd.read_csv(table_dir / "table.csv")
    rows = table[table.task == IN_DOMAIN_TASK]
    if rows.empty:
        return []
    scores = rows.iloc[0]
    verdicts = [Verdict("Table 1", "at the same size the width-pruned student is more accurate than the "
                                   "depth-pruned one (4B-Width above 4B-Depth on 8 of 9 benchmarks)",
                        f"width above depth on {IN_DOMAIN_TASK} (the suite's tasks at this scale are at chance "
                        "otherwise)", f"{scores['width']:.1f} vs {scores['depth']:.1f}",
                        bool(scores["width"] > scores["depth"]))]
    if "width-fp8" in scores:
        drops = {s: scores[s] - scores[f"{s}-fp8"] for s in ("width", "depth")}
        verdicts.append(Verdict(
            "Table 1 / Figure 10", "the students deploy in FP8 (the paper reports FP8 throughput, not its accuracy)",
            f"FP8 (fake-quantized) loses at most 2 points of {IN_DOMAIN_TASK} against BF16",
            ", ".join(f"{s} {scores[s]:.1f} -> {scores[s + '-fp8']:.1f}" for s in drops),
            bool(max(drops.values()) <= 2.0)))
    return verdicts


def deployment(folders: dict[str, Path], out: Path) -> list[Verdict]:
    """The FP8 checkpoint's record and the deployment folder's manifest, copied beside the findings."""
    for stage, name, copy in (("quantize", "minitron.json", "fp8-quantize-record.json"),
                              ("deploy", "manifest.json", "deploy-manifest.json")):
        if stage in folders and (folders[stage] / name).is_file():
            shutil.copy(folders[stage] / name, out / copy)
    return []


SECTIONS = [
    ("Teacher correction (Figures 4 and 5)", teacher_correction, "teacher-correction"),
    ("Pruning and distillation vs baselines (Figure 6)", pruning_and_distillation, "pruning-and-distillation"),
    ("Width vs depth at the same size (Figure 7)", width_vs_depth, "width-vs-depth"),
    ("Depth sensitivity: LM loss and accuracy, contiguous vs not (Figures 8 and 9)", depth_sensitivity,
     "depth-sensitivity"),
    ("Throughput of teacher and students, measured and ideal (Figure 10)", throughput, "throughput"),
    ("Evals beside the paper's Table 1", evals, "evals"),
    ("FP8 checkpoint and deployment folder", deployment, "deployment"),
]


def write_findings(folders: dict[str, Path], out: str | Path, recipe) -> list[Verdict]:
    """Every section's table, plot and verdicts into `out`, with `findings.md` listing them all."""
    out = Path(out)
    with output_dir(out, overwrite=True) as tmp:
        sections = [(title, fn(folders, tmp), stem) for title, fn, stem in SECTIONS]
        verdicts = [v for _, section, _ in sections for v in section]
        pd.DataFrame([asdict(v) for v in verdicts]).to_csv(tmp / "findings.csv", index=False)
        record = write_record(tmp, "findings", seed=recipe.distill.get("seed", 0), recipe=recipe.name,
                              distill=recipe.distill, verdicts=[asdict(v) for v in verdicts])
        (tmp / "findings.md").write_text(_markdown(recipe, sections, verdicts, record["provenance"], tmp))
    held = sum(v.held for v in verdicts)
    log.info("findings: %d of %d of the paper's claims held at this scale -> %s",
                                       held, len(verdicts), out / "findings.md")
    return verdicts


def _markdown(recipe, sections, verdicts: list[Verdict], provenance: dict, folder: Path) -> str:
    def table(items: list[Verdict]) -> str:
        frame = pd.DataFrame([{"paper": v.figure, "claim": v.claim, "rule here": v.rule, "measured": v.measured,
                               "held": "held" if v.held else "did not hold"} for v in items])
        return frame.to_markdown(index=False)

    steps = recipe.distill.get("steps")
    lines = [f"# The paper's findings at the scale of `{recipe.name}`", "",
             f"Regenerated by `minitron run` on this recipe; {sum(v.held for v in verdicts)} of {len(verdicts)} "
             f"claims held. Every distillation run trains for the same budget ({steps} steps of "
             f"{recipe.distill.get('global_batch')} x {recipe.distill.get('seq_len')} tokens). Measured on "
             f"{_machine(provenance['hardware'])}, git "
             f"{(provenance.get('git_sha') or 'unknown')[:10]}; numbers on a model this small say nothing about "
             "real ones, only whether the recipe's effects show at all.", "", table(verdicts), ""]
    for title, section, stem in sections:
        lines += [f"## {title}", ""]
        if (folder / f"{stem}.png").is_file():
            lines += [f"![{title}]({stem}.png)", ""]
        if stem == "evals":
            lines += [(folder / "evals.md").read_text(), ""]
        elif stem == "deployment" and (folder / "fp8-quantize-record.json").is_file():
            lines += [_fp8_summary(json.loads((folder / "fp8-quantize-record.json").read_text())), ""]
        elif (folder / f"{stem}.csv").is_file():
            lines += [pd.read_csv(folder / f"{stem}.csv").to_markdown(index=False, floatfmt=".4g"), ""]
        if section:
            lines += [table(section), ""]
    return "\n".join(lines)


def _machine(hardware: dict) -> str:
    return hardware["gpu"] or f"{hardware['cpu_count']} CPU cores ({hardware['cpu']})"


def _fp8_summary(record: dict) -> str:
    a, export = record["accuracy"], record["export_check"]
    return (f"ModelOpt FP8 of the width-pruned student ({record['kv_cache_dtype']} KV cache), measured before export: "
            f"LM loss {a['lm_loss_reference']:.4f} -> {a['lm_loss_fp8']:.4f}, token KL {a['token_kl']:.4f} on "
            f"{a['held_out_blocks']} held-out blocks; every exported weight within "
            f"{export['max_error_over_fp8_bound']:.2f}x of FP8's rounding bound (`fp8-quantize-record.json`). "
            "The deployment folder's manifest, with the engine commands: `deploy-manifest.json`.")
