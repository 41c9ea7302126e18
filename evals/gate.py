"""The regression gate: did the candidate get worse than the baseline, beyond noise?

    minitron eval gate results/evals/baseline results/evals/candidate --max-drop 0.01 --z 2

Per task, on the suite's headline metric. Where both runs scored the same documents (matched by lm-eval's
doc_hash), the test is paired: the mean of the per-document differences, with the standard error of those
differences, which is far tighter than comparing two aggregate stderrs because the documents' own difficulty
cancels. A task regressed when its drop exceeds `max_drop` and is `z` standard errors from zero. Documents
whose prompt changed (prompt_hash differs) are drift: reported, and the task is not judged, since a changed
prompt is a change of the test, not of the model.

A candidate that was retrained (a CI job that rebuilds the model) differs from a baseline that was trained once
by retraining noise too, which no per-document standard error sees: another seed or another machine moves a
small model's accuracy by points. `retrain_sd` is that noise, measured as the standard deviation of the task's
metric over rebuilds of one tree; each of the two runs carries it, so the difference's standard error becomes
sqrt(stderr^2 + 2 retrain_sd^2).

Exit status: 0 nothing regressed, 1 something regressed, 2 what the gate cannot judge: a run folder that is
not an eval run or lacks a task, a metric or a document id, a metric that is not a finite number, a baseline
with no tasks, or prompts that changed (drift).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from minitron.core.errors import BadInput
from minitron.core.stats import paired_difference


class GateInputError(BadInput):
    """A baseline or candidate run the gate cannot judge: exit 2, not a verdict."""


@dataclass
class TaskVerdict:
    task: str
    metric: str
    baseline: float
    candidate: float
    delta: float
    """Candidate minus baseline, signed so that positive is better."""
    stderr: float
    paired: int
    """Documents compared pairwise (0: aggregate stderrs were used)."""
    drifted: int
    status: str
    """ok, improved, REGRESSED or drift."""


def load_run(folder: str | Path) -> dict:
    from minitron.core.records import read_jsonl

    folder = Path(folder)
    try:
        record = json.loads((folder / "minitron.json").read_text())
        results = json.loads((folder / "results.json").read_text())
    except FileNotFoundError:
        raise GateInputError(f"{folder} is not an eval run folder (no minitron.json/results.json); pass folders "
                             "written by `minitron eval run`") from None
    except json.JSONDecodeError as err:
        raise GateInputError(f"{folder}: {err.msg} in its minitron.json or results.json; rerun "
                             "`minitron eval run` for it") from None
    if not isinstance(record, dict) or record.get("stage") != "eval":
        raise GateInputError(f"{folder} holds a {record.get('stage') if isinstance(record, dict) else record!r} "
                             "record, not an eval run")
    missing = [key for key in ("suite", "suite_tasks") if key not in record]
    if missing or not isinstance(results, dict) or not isinstance(results.get("results"), dict):
        raise GateInputError(f"{folder} is an incomplete eval run (its record lacks {', '.join(missing) or 'nothing'}"
                             ", its results.json a `results` mapping); rerun `minitron eval run` for it")
    samples = {path.stem: read_jsonl(path, "sample record") for path in sorted((folder / "samples").glob("*.jsonl"))}
    return {"folder": folder, "record": record, "results": results, "samples": samples}


def _finite(value, where: str) -> float:
    if isinstance(value, (list, tuple)):  # some metrics log (value, extra) pairs
        value = value[0] if value else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise GateInputError(f"{where} is {value!r}, not a finite number: the run is broken, not a verdict; rerun "
                             "`minitron eval run` for it")
    return number


def _per_doc(run: dict, task: str, metric: str, filter_name: str) -> dict[str, tuple[float, str]]:
    """doc_hash -> (metric value, prompt_hash) for one filter's records."""
    out = {}
    for i, r in enumerate(run["samples"].get(task, []), 1):
        if r.get("filter", filter_name) != filter_name or metric not in r:
            continue
        where = f"{run['folder']}/samples/{task}.jsonl record {i}"
        if "doc_hash" not in r:
            raise GateInputError(f"{where} has no doc_hash, so documents cannot be paired; rerun `minitron eval "
                                 "run` for it")
        out[r["doc_hash"]] = (_finite(r[metric], f"{where}'s {metric}"), r.get("prompt_hash", ""))
    return out


def _aggregate(run: dict, task: str, metric_key: str) -> float:
    try:
        value = run["results"]["results"][task][metric_key]
    except (KeyError, TypeError):
        raise GateInputError(f"{run['folder']} has no {metric_key} for {task}; compare runs of one suite, made "
                             "by `minitron eval run`") from None
    return _finite(value, f"{run['folder']}'s {task} {metric_key}")


def compare_task(base: dict, cand: dict, task: str, metric_key: str, max_drop: float, z: float,
                 retrain_sd: float = 0.0) -> TaskVerdict:
    metric, _, filter_name = metric_key.partition(",")
    sign = 1.0 if base["results"].get("higher_is_better", {}).get(task, {}).get(metric, True) else -1.0
    b_value, c_value = _aggregate(base, task, metric_key), _aggregate(cand, task, metric_key)
    b_docs = _per_doc(base, task, metric, filter_name)
    c_docs = _per_doc(cand, task, metric, filter_name)
    common = sorted(set(b_docs) & set(c_docs))
    drifted = sum(b_docs[h][1] != c_docs[h][1] for h in common)
    if common:
        delta, stderr = paired_difference([sign * (c_docs[h][0] - b_docs[h][0]) for h in common])
    else:
        delta = sign * (c_value - b_value)
        errs = [r["results"]["results"][task].get(f"{metric}_stderr,{filter_name}") for r in (base, cand)]
        stderr = math.sqrt(sum(float(e) ** 2 for e in errs if isinstance(e, (int, float))))
    stderr = math.sqrt(stderr ** 2 + 2 * retrain_sd ** 2)
    if drifted:
        status = "drift"
    elif delta < -max_drop and (stderr == 0 or -delta / stderr > z):
        status = "REGRESSED"
    elif delta > max_drop and (stderr == 0 or delta / stderr > z):
        status = "improved"
    else:
        status = "ok"
    return TaskVerdict(task, metric_key, b_value, c_value, delta, stderr, len(common), drifted, status)


def gate(baseline: str | Path, candidate: str | Path, max_drop: float = 0.01, z: float = 2.0,
         retrain_sd: float = 0.0) -> list[TaskVerdict]:
    base, cand = load_run(baseline), load_run(candidate)
    if base["record"]["suite"] != cand["record"]["suite"]:
        raise GateInputError(f"the runs are of different suites ({base['record']['suite']!r} vs "
                             f"{cand['record']['suite']!r}); compare runs of one suite")
    if max_drop < 0 or z < 0:
        raise GateInputError(f"--max-drop and --z are a tolerated drop and a number of standard errors, both >= 0; "
                             f"got {max_drop} and {z}")
    tasks = base["record"]["suite_tasks"]
    if not tasks:
        raise GateInputError(f"the baseline {baseline} lists no tasks, so the gate would compare nothing; pass a "
                             "run of a suite with tasks")
    verdicts = []
    for entry in tasks:
        if not isinstance(entry, dict) or "task" not in entry or "metric" not in entry:
            raise GateInputError(f"the baseline's suite_tasks entry {entry!r} needs a task and a metric")
        verdicts.append(compare_task(base, cand, entry["task"], entry["metric"], max_drop, z, retrain_sd))
    return verdicts


def report(verdicts: list[TaskVerdict]) -> str:
    lines = [f"{'task':34s} {'metric':26s} {'base':>7s} {'cand':>7s} {'delta':>8s} {'stderr':>7s} {'docs':>5s}  status"]
    for v in verdicts:
        docs = f"{v.paired}" if v.paired else "agg"
        note = f" ({v.drifted} prompts changed)" if v.drifted else ""
        lines.append(f"{v.task:34s} {v.metric:26s} {v.baseline:7.4f} {v.candidate:7.4f} {v.delta:+8.4f} "
                     f"{v.stderr:7.4f} {docs:>5s}  {v.status}{note}")
    regressed = [v.task for v in verdicts if v.status == "REGRESSED"]
    drift = [v.task for v in verdicts if v.status == "drift"]
    lines.append(f"{len(regressed)} regressed" + (f": {', '.join(regressed)}" if regressed else "")
                 + (f"; prompt drift (not judged): {', '.join(drift)}" if drift else ""))
    return "\n".join(lines)
