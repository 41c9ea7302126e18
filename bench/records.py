"""The result schema of every backend, and the JSONL file a sweep appends to and resumes from.

    OUT/records.jsonl      one JSON object per (label, backend, batch size, ISL, OSL), appended when complete

A record is written only after all repeats of its grid point finished, with one `write` of a whole line
followed by fsync, so a sweep killed at any moment keeps every finished point, and rerunning the same sweep
with the same OUT skips them (by `record_key`) and measures only the rest. A last line cut short by a crash is
ignored on reading and dropped on the next append.

Throughputs are the median over repeats, with the min and max beside them; latencies (TTFT, TPOT) are those
of the repeat whose request throughput is closest to the median, so the numbers of one record belong to one
run. `arch` carries what `bench.ideal` needs, so reports never load a model.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from minitron.core.errors import BadInput, MissingInput
from minitron.core.records import read_jsonl

log = logging.getLogger(__name__)

RECORDS_NAME = "records.jsonl"
SCHEMA_VERSION = 1
KEY_FIELDS = ("label", "backend", "batch_size", "isl", "osl")
REQUIRED_FIELDS = KEY_FIELDS + ("requests_per_s", "output_tokens_per_s", "arch", "dtype", "kv_cache_dtype")


@dataclass
class Repeat:
    """One measured repeat of a grid point, as a backend reports it."""

    requests_per_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float
    actual_isl: float | None
    """Mean prompt tokens per request the engine really processed (None where the engine does not say)."""
    actual_osl: float | None
    """Mean generated tokens per request."""
    ttft_ms: dict | None = None
    """Time to first token: {"mean", "p50", "p90", "p99"} in ms; keys an engine does not report are absent."""
    tpot_ms: dict | None = None
    """Time per output token after the first, same keys."""
    elapsed_s: float | None = None


@dataclass
class Record:
    label: str
    """The model's name in tables and figures (--label; default: the folder name)."""
    backend: str
    """hf, vllm, trtllm or openai."""
    model: str
    """The folder or URL given to --model."""
    isl: int
    osl: int
    batch_size: int
    concurrency: int
    """Requests in flight at once: the static batch (hf), max running sequences (vllm), --concurrency (trtllm),
    parallel streams (openai)."""
    num_requests: int
    repeats: int
    warmup_requests: int
    seed: int
    actual_isl: float | None
    actual_osl: float | None
    length_mismatch: bool | None
    """True when the measured ISL or OSL differs from the requested one; None when the engine does not say."""
    requests_per_s: float
    requests_per_s_min: float
    requests_per_s_max: float
    output_tokens_per_s: float
    output_tokens_per_s_min: float
    output_tokens_per_s_max: float
    total_tokens_per_s: float
    total_tokens_per_s_min: float
    total_tokens_per_s_max: float
    ttft_ms: dict | None
    tpot_ms: dict | None
    dtype: str | None
    """Storage type of the weights as run: fp8, bfloat16, float16, float32."""
    kv_cache_dtype: str | None
    engine: str
    engine_version: str | None
    arch: dict | None
    """`bench.target.arch_summary`: dims, parameter counts, positions; what the ideal speedup needs."""
    command: list[str] | None
    """The engine command line that produced the numbers (trtllm-bench, vllm bench), else None."""
    per_repeat: list[dict] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)


def latency_stats(values_ms: list[float]) -> dict | None:
    """Mean and p50/p90/p99 of per-request latencies (linear interpolation), or None without values."""
    if not values_ms:
        return None
    arr = np.asarray(values_ms, dtype=float)
    return {"mean": float(arr.mean()), **{f"p{q}": float(np.percentile(arr, q)) for q in (50, 90, 99)}}


def summarize(repeats: list[Repeat], isl: int, osl: int) -> dict:
    """The Record fields that come from the measurements: median/min/max over repeats, measured lengths."""
    if not repeats:
        raise BadInput("no repeats were measured; pass --repeats 1 or more")

    def spread(name: str) -> dict:
        values = [getattr(r, name) for r in repeats]
        return {name: float(statistics.median(values)), f"{name}_min": float(min(values)),
                f"{name}_max": float(max(values))}

    fields = {**spread("requests_per_s"), **spread("output_tokens_per_s"), **spread("total_tokens_per_s")}
    middle = min(repeats, key=lambda r: abs(r.requests_per_s - fields["requests_per_s"]))
    fields["ttft_ms"], fields["tpot_ms"] = middle.ttft_ms, middle.tpot_ms
    for name in ("actual_isl", "actual_osl"):
        known = [getattr(r, name) for r in repeats if getattr(r, name) is not None]
        fields[name] = float(np.mean(known)) if known else None
    if fields["actual_isl"] is None and fields["actual_osl"] is None:
        fields["length_mismatch"] = None
    else:
        fields["length_mismatch"] = any(actual is not None and abs(actual - want) > 1e-6
                                        for actual, want in ((fields["actual_isl"], isl), (fields["actual_osl"], osl)))
    fields["per_repeat"] = [asdict(r) for r in repeats]
    return fields


def record_key(record: dict) -> tuple:
    return tuple(record[k] for k in KEY_FIELDS)


def append_record(path: str | Path, record: Record | dict) -> None:
    """Append one complete line and fsync it; a previous line cut short by a crash is dropped first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = record.to_dict() if isinstance(record, Record) else record
    with open(path, "ab+") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a line cut short by a crash: drop it
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)
        f.write((json.dumps(data, default=str) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def read_records(path: str | Path) -> list[dict]:
    """All complete records of a file (none when it does not exist yet); a last line cut short is skipped."""
    path = Path(path)
    return read_jsonl(path, "throughput record") if path.is_file() else []


def load_results(paths: list[str | Path]) -> list[dict]:
    """Records from records.jsonl files or the sweep folders that hold them, validated for reporting."""
    records = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            path = path / RECORDS_NAME
        if not path.is_file():
            raise MissingInput(f"{given}: no {RECORDS_NAME} there; pass the --out folder of "
                                    "`minitron bench sweep` or its records.jsonl")
        found = read_records(path)
        for number, record in enumerate(found, 1):
            missing = [k for k in REQUIRED_FIELDS if k not in record]
            if missing:
                raise BadInput(f"{path}: record {number} lacks {', '.join(missing)}; it was not written by "
                                 "`minitron bench sweep` (or by an older schema): rerun the sweep")
        records.extend(found)
    if not records:
        raise BadInput(f"no records in {', '.join(map(str, paths))}; run `minitron bench sweep` first")
    models: dict[str, set] = {}
    for record in records:
        models.setdefault(record["label"], set()).add(str(record.get("model")))
    shared = {label: sorted(m) for label, m in models.items() if len(m) > 1}
    if shared:  # the report keys points by label: one model's points would silently replace the other's
        label, names = next(iter(shared.items()))
        raise BadInput(f"the label {label!r} names several models ({', '.join(names)}); sweep them with distinct "
                       "--label values")
    return records
