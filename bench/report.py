"""Figure 10 and its tables from stored records, without running anything.

    minitron bench plot results/bench/h100 --out results/bench/h100/report --baseline llama-8b
    minitron bench plot work/bench-cpu --out work/bench-cpu/report      # baseline: the largest model

Writes into --out (created; other files there are left alone):
- `figure10.png`: requests/s per ISL/OSL, one bar per model, each bar annotated with its speedup over the
  baseline, and a tick where the architecture's ideal (bytes moved per token) would put it;
- `points.csv`: every model at every point: throughput (median, min, max), TTFT/TPOT p50, measured lengths,
  the measured speedup and the ideal ones (`bench.ideal`: FLOPs and bytes per generated token);
- `speedup.csv` and `report.md`: per model, the average speedup over the baseline across the points both
  ran (arithmetic mean, as the paper's "average throughput improvement"), the average ideal speedups, how
  much of the ideal the engine reached, and the paper's claim for that kind of model (`bench/paper/`): 2.7x
  for the depth-pruned 4B, 1.8x for the width-pruned one, 1.4x for FP8 over BF16.

Where a model ran a point at several batch sizes, its best is used: the paper runs each model at the largest
batch its memory allows (32 for 8B, 64 for 4B). Speedups compare records of the same backend.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from minitron.bench.ideal import ideal_speedup
from minitron.bench.records import load_results
from minitron.core.errors import BadInput

PAPER_CLAIMS = Path(__file__).resolve().parent / "paper" / "figure10_runtime_claims.csv"
CLAIM_OF_KIND = {"depth": "depth_pruned_4b_vs_llama31_8b_avg_throughput_speedup",
                 "width": "width_pruned_4b_vs_llama31_8b_avg_throughput_speedup",
                 "fp8": "fp8_vs_bf16_throughput_speedup"}


def best_records(records: list[dict]) -> list[dict]:
    """One record per (label, backend, ISL, OSL): the batch size with the highest request throughput."""
    best: dict[tuple, dict] = {}
    for r in records:
        key = (r["label"], r["backend"], r["isl"], r["osl"])
        if key not in best or r["requests_per_s"] > best[key]["requests_per_s"]:
            best[key] = r
    return list(best.values())


def choose_baseline(records: list[dict], baseline: str | None) -> str:
    """The given label (checked), else the model with the most parameters: the teacher."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    if baseline is not None:
        if baseline not in labels:
            raise BadInput(f"--baseline {baseline!r} is not among the labels in the results: {', '.join(labels)}")
        return baseline
    return max(labels, key=lambda label: max((r["arch"] or {}).get("params", 0) for r in records
                                             if r["label"] == label))


def kind_of(record: dict, base: dict) -> str:
    """How a model relates to the baseline: depth- or width-pruned, the same model in FP8, or other."""
    a, b = record.get("arch") or {}, base.get("arch") or {}
    dims = ("hidden", "ffn", "heads", "kv_heads", "head_dim")
    if not a or not b:
        return "unknown"
    if a["layers"] < b["layers"] and all(a[d] == b[d] for d in dims):
        return "depth"
    if a["layers"] == b["layers"] and any(a[d] < b[d] for d in dims):
        return "width"
    if all(a[d] == b[d] for d in dims + ("layers",)):
        return "fp8" if record["dtype"] == "fp8" and base["dtype"] != "fp8" else "same"
    return "other"


def points_table(records: list[dict], baseline: str) -> pd.DataFrame:
    """Every (model, backend, ISL/OSL) with its throughput, latencies, measured and ideal speedups."""
    best = best_records(records)
    bases = {(r["backend"], r["isl"], r["osl"]): r for r in best if r["label"] == baseline}
    rows = []
    for r in sorted(best, key=lambda r: (r["backend"], r["isl"], r["osl"], r["label"] != baseline, r["label"])):
        base = bases.get((r["backend"], r["isl"], r["osl"]))
        ideal = ideal_speedup(base, r) if base else {"flops": None, "bytes": None}
        rows.append({
            "label": r["label"], "backend": r["backend"], "isl_osl": f"{r['isl']}/{r['osl']}", "isl": r["isl"],
            "osl": r["osl"], "batch": r["batch_size"], "dtype": r["dtype"], "kv_dtype": r["kv_cache_dtype"],
            "req_s": r["requests_per_s"], "req_s_min": r["requests_per_s_min"], "req_s_max": r["requests_per_s_max"],
            "out_tok_s": r["output_tokens_per_s"],
            "ttft_p50_ms": (r.get("ttft_ms") or {}).get("p50"), "tpot_p50_ms": (r.get("tpot_ms") or {}).get("p50"),
            "actual_isl": r.get("actual_isl"), "actual_osl": r.get("actual_osl"),
            "length_mismatch": r.get("length_mismatch"),
            "speedup": r["requests_per_s"] / base["requests_per_s"] if base else None,
            "ideal_flops": ideal["flops"], "ideal_bytes": ideal["bytes"],
            "kind": kind_of(r, base) if base else None,
        })
    return pd.DataFrame(rows)


def paper_claims() -> dict[str, float]:
    return dict(pd.read_csv(PAPER_CLAIMS)[["claim", "value"]].itertuples(index=False))


def summary_table(points: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per model and backend, averages over the points shared with the baseline, beside the paper's claim."""
    claims = paper_claims()
    rows = []
    for (label, backend), group in points.groupby(["label", "backend"], sort=False):
        shared = group.dropna(subset=["speedup"])
        if label == baseline or shared.empty:
            continue
        kind = shared["kind"].mode().iloc[0]
        measured, ideal_bytes = shared["speedup"].mean(), shared["ideal_bytes"].mean()
        rows.append({"label": label, "backend": backend, "vs": baseline, "kind": kind, "points": len(shared),
                     "avg_speedup": measured, "avg_ideal_flops": shared["ideal_flops"].mean(),
                     "avg_ideal_bytes": ideal_bytes, "of_ideal_bytes": measured / ideal_bytes,
                     "paper_speedup": claims.get(CLAIM_OF_KIND.get(kind, ""))})
    return pd.DataFrame(rows, columns=["label", "backend", "vs", "kind", "points", "avg_speedup", "avg_ideal_flops",
                                       "avg_ideal_bytes", "of_ideal_bytes", "paper_speedup"])


def markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub table without optional dependencies."""
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def plot_figure10(points: pd.DataFrame, baseline: str, path: str | Path) -> None:
    """Grouped bars like the paper's Figure 10: requests/s per ISL/OSL, a bar per model, speedups annotated."""
    from minitron.core.plots import figure

    frame = points.copy()
    several = frame["backend"].nunique() > 1
    frame["series"] = frame["label"] + (" (" + frame["backend"] + ")" if several else "")
    order = frame.sort_values(["isl", "osl"])["isl_osl"].drop_duplicates().tolist()
    series = list(dict.fromkeys(frame.sort_values("label", key=lambda s: s != baseline, kind="stable")["series"]))
    width = 0.8 / len(series)
    fig = figure(figsize=(3.0 + max(4.0, 1.2 * len(order) * max(1, len(series) / 2)), 4.5))
    ax = fig.subplots()
    ideal_drawn = False
    for i, name in enumerate(series):
        rows = frame[frame["series"] == name].set_index("isl_osl")
        xs = [order.index(p) + (i - (len(series) - 1) / 2) * width for p in rows.index]
        bars = ax.bar(xs, rows["req_s"], width * 0.95, label=name)
        for x, bar, (_, row) in zip(xs, bars, rows.iterrows()):
            if row["label"] == baseline or pd.isna(row["speedup"]):
                continue
            ideal_level = row["req_s"] / row["speedup"] * row["ideal_bytes"]
            ax.annotate(f"{row['speedup']:.2f}x", (x, max(bar.get_height(), ideal_level)), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
            ax.plot([x - width * 0.45, x + width * 0.45], [ideal_level] * 2, color="black", lw=1.5,
                    label=None if ideal_drawn else "ideal (bytes moved per token)")
            ideal_drawn = True
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel("ISL/OSL (tokens)")
    ax.set_ylabel("throughput (requests/s)")
    if frame["req_s"].max() / frame["req_s"].min() > 50:
        ax.set_yscale("log")
    ax.set_title(f"Throughput per ISL/OSL; speedups over {baseline}")
    ax.margins(y=0.12)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def write_report(results: list[str | Path], out: str | Path, baseline: str | None = None) -> pd.DataFrame:
    """Load records, write figure10.png, points.csv, speedup.csv and report.md into `out`; return the summary."""
    records = load_results(results)
    baseline = choose_baseline(records, baseline)
    points = points_table(records, baseline)
    summary = summary_table(points, baseline)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_figure10(points, baseline, out / "figure10.png")
    points.to_csv(out / "points.csv", index=False, float_format="%.6g")
    summary.to_csv(out / "speedup.csv", index=False, float_format="%.4g")
    claims = pd.read_csv(PAPER_CLAIMS)
    shown = ["label", "backend", "isl_osl", "batch", "dtype", "req_s", "req_s_min", "req_s_max", "out_tok_s",
             "ttft_p50_ms", "tpot_p50_ms", "length_mismatch", "speedup", "ideal_flops", "ideal_bytes"]
    (out / "report.md").write_text(
        f"# Throughput over {baseline}\n\n## Average speedup over {baseline}\n\n{markdown(summary)}\n\n"
        "`avg_ideal_*`: the architecture's ratio of FLOPs / bytes moved per generated token (weights and KV cache "
        "at each point's ISL/OSL and batch); `of_ideal_bytes`: the measured speedup over the bytes ratio.\n\n"
        f"## The paper (Figure 10, TensorRT-LLM FP8 on one H100)\n\n{markdown(claims)}\n\n"
        f"## Every point\n\n{markdown(points[shown])}\n")
    return summary
