"""Tables like the paper's Tables 1 and 2: our runs side by side, the paper's published columns beside them,
and each run's change relative to the teacher.

    minitron eval table results/evals/teacher/base results/evals/width/base --out results/tables

Scores are in percent, as the paper prints them. The first run is the teacher unless `teacher` names
another run's label.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from minitron.core.records import output_dir
from minitron.evals.gate import GateInputError, load_run
from minitron.evals.suites import PAPER_DIR


def run_label(run: dict) -> str:
    return run["record"].get("label") or Path(run["record"]["model"]).name


def build_table(runs: list[dict], teacher: str | None = None, paper_columns: list[str] | None = None) -> pd.DataFrame:
    suites = {r["record"]["suite"] for r in runs}
    if len(suites) != 1:
        raise GateInputError(f"the runs are of different suites ({', '.join(sorted(suites))}); table one suite")
    entries = runs[0]["record"]["suite_tasks"]
    rows = {e["paper_row"] or e["task"]: {"task": e["task"], "metric": e["metric"]} for e in entries}
    labels = [run_label(r) for r in runs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:  # one column per label: a second run would silently replace the first
        raise GateInputError(f"several runs are labelled {', '.join(map(repr, repeated))}; give each its own "
                             "--label in `minitron eval run`")
    for label, run in zip(labels, runs):
        for e in entries:
            value = run["results"]["results"].get(e["task"], {}).get(e["metric"])
            rows[e["paper_row"] or e["task"]][label] = None if value is None else 100 * float(value)
    for u in runs[0]["record"].get("unsupported", []):
        rows[u["paper_row"] or u["name"]] = {"task": u["name"], "metric": f"not supported: {u['reason']}"}
    table = pd.DataFrame.from_dict(rows, orient="index")
    teacher = teacher or labels[0]
    if teacher not in labels:
        raise GateInputError(f"no run is labelled {teacher!r}; labels: {', '.join(labels)}")
    for label in labels:
        if label != teacher:
            table[f"{label} vs {teacher}"] = table[label] - table[teacher]
    paper_csv = runs[0]["record"].get("paper_table")
    if paper_csv and (PAPER_DIR / paper_csv).is_file():
        paper = pd.read_csv(PAPER_DIR / paper_csv).set_index("benchmark")
        wanted = paper_columns or [c for c in paper.columns if c != "shots"]
        for column in wanted:
            if column not in paper.columns:
                raise GateInputError(f"the paper's table has no column {column!r}; it has: {', '.join(paper.columns)}")
            table[f"paper: {column}"] = pd.to_numeric(paper[column].reindex(table.index), errors="coerce")
    table.index.name = "benchmark"
    return table


def write_table(run_folders: list[str | Path], out: str | Path, teacher: str | None = None,
                paper_columns: list[str] | None = None, overwrite: bool = True) -> pd.DataFrame:
    runs = [load_run(f) for f in run_folders]
    table = build_table(runs, teacher, paper_columns)
    with output_dir(out, overwrite, reads=run_folders) as tmp:
        table.to_csv(tmp / "table.csv", float_format="%.2f")
        (tmp / "table.md").write_text(table.to_markdown(floatfmt=".1f") + "\n")
    return table
