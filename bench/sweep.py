"""A sweep: each model over each ISL/OSL point on one backend, appended to OUT/records.jsonl point by point.

CPU smoke run after scripts/demo.sh, the teacher and its two students in one run (10 s):
    minitron bench sweep --backend hf --model work/tiny/corrected --model work/tiny/distilled-depth \
        --model work/tiny/distilled --label teacher --label depth --label width --out work/bench-cpu \
        --isl-osl 64/32,256/64 --batch-size 8 --num-requests 16 --repeats 3
The paper's Figure 10 on one H100 (FP8, TensorRT-LLM; 32 for the 8B, 64 for the 4B models):
    minitron bench sweep --backend trtllm --model deploy/llama-8b --out results/bench/h100 --batch-size 32
    minitron bench sweep --backend trtllm --model deploy/4b-depth --model deploy/4b-width --out results/bench/h100 \
        --batch-size 64

Everything that can be checked without running is checked first, for every model: the folder suits the
backend, every ISL+OSL fits the model's positions, labels are unique and each label keeps naming the same
model in OUT. Then the engine is opened (a missing one fails here, before any measurement) and each point is
measured and appended as soon as its repeats finish. A sweep rerun with the same OUT skips the points
already there, so one that died (or an engine that failed) resumes where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from minitron.bench import target as targets
from minitron.bench.records import RECORDS_NAME, Record, append_record, read_records, record_key, summarize
from minitron.bench.workload import allowed_ids, check_fits, make_requests
from minitron.core.errors import BadInput, MissingInput

log = logging.getLogger(__name__)


@dataclass
class Settings:
    batch_size: int = 32
    """Requests in flight at once; the paper runs 32 for 8B-12B models and 64 for 4B ones."""
    num_requests: int | None = None
    """Requests per grid point and repeat; None: 4 batches."""
    repeats: int = 3
    warmup: int | None = None
    """Warm-up requests before the repeats of each point; None: one batch."""
    seed: int = 1234
    device: str = "auto"
    """hf only: cpu, cuda, ...; auto picks CUDA when present."""
    dtype: str = "auto"
    """hf only: the dtype to load the weights in; auto keeps the checkpoint's."""
    tokenizer: str | None = None
    """openai only: the served model's checkpoint or deployment folder."""
    served_model: str | None = None
    """openai only: the model name on the server; default: the first it lists."""
    timeout: float = 3600.0
    """Seconds one engine run (trtllm, vllm CLI) or one streamed request (openai) may take."""

    def resolved(self) -> "Settings":
        for flag, value in (("--batch-size", self.batch_size), ("--num-requests", self.num_requests or 1),
                            ("--repeats", self.repeats)):
            if value < 1:
                raise BadInput(f"{flag} must be at least 1, got {value}")
        if self.warmup is not None and self.warmup < 0:
            raise BadInput(f"--warmup must be 0 or more, got {self.warmup}")
        num = self.num_requests or 4 * self.batch_size
        return Settings(**{**self.__dict__, "num_requests": num,
                           "warmup": self.batch_size if self.warmup is None else self.warmup})


def open_runner(backend: str, target, s: Settings, max_seq_len: int, raw_dir: Path):
    """The backend's Runner; engines are imported only here, so a missing one fails only when asked for."""
    if backend == "hf":
        from minitron.bench.hf import Runner

        return Runner(target, s.batch_size, s.repeats, s.warmup, device=s.device, dtype=s.dtype)
    if backend == "trtllm":
        from minitron.bench.trtllm import Runner

        return Runner(target, s.batch_size, s.repeats, s.warmup, raw_dir, timeout=s.timeout)
    if backend == "vllm":
        from minitron.bench.vllm import Runner

        return Runner(target, s.batch_size, s.repeats, s.warmup, s.seed, max_seq_len, raw_dir, timeout=s.timeout)
    from minitron.bench.openai import Runner

    return Runner(target, s.batch_size, s.repeats, s.warmup, served_model=s.served_model, timeout=s.timeout)


def model_id(target) -> str:
    """What a record's `model` says: the URL, or the folder's absolute path."""
    return target.url or str(Path(target.model).resolve())


def _check_labels(found: list, records: list[dict], backend: str) -> None:
    labels = [t.label for t in found]
    if len(set(labels)) != len(labels):
        raise BadInput(f"two models share the label {max(labels, key=labels.count)!r}; give each its own --label")
    for t in found:
        earlier = {r["model"] for r in records if r["label"] == t.label and r["backend"] == backend}
        if earlier - {model_id(t)}:
            raise BadInput(f"the label {t.label!r} already names {earlier.pop()} in this --out; pass another "
                             "--label for this model, or another --out")


def tokenizer_ids(target) -> list[int]:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(target.checkpoint)
    except (OSError, ValueError) as err:
        raise MissingInput(f"no usable tokenizer in {target.checkpoint} ({err}); save the tokenizer beside "
                                "the weights") from None
    return allowed_ids(tokenizer, target.config.vocab_size)


def sweep(backend: str, models: list[str], out: str | Path, grid: list[tuple[int, int]], settings: Settings,
          labels: list[str] | None = None) -> list[dict]:
    """Measure every (model, grid point) not yet in OUT/records.jsonl; return the records written now."""
    from minitron.core.records import provenance

    s = settings.resolved()
    if labels and len(labels) != len(models):
        raise BadInput(f"--label was given {len(labels)} times for {len(models)} --model; give one per model, "
                         "in the same order, or none")
    names = labels or [None] * len(models)
    found = [targets.resolve(backend, model, name, s.tokenizer) for model, name in zip(models, names)]
    for t in found:
        for isl, osl in grid:
            check_fits(isl, osl, t.max_positions, t.label)
    path = Path(out) / RECORDS_NAME
    existing = read_records(path)
    _check_labels(found, existing, backend)
    done = {record_key(r) for r in existing}
    written = []
    for t in found:
        todo = [(isl, osl) for isl, osl in grid if (t.label, backend, s.batch_size, isl, osl) not in done]
        if not todo:
            log.info("%s: every point is already in %s; nothing to run", t.label, path)
            continue
        ids = tokenizer_ids(t)
        arch = t.arch()
        runner = open_runner(backend, t, s, max(i + o for i, o in todo), Path(out) / "raw")
        try:
            for isl, osl in todo:
                requests = make_requests(ids, isl, s.num_requests, s.seed)
                measured = summarize(runner.measure(isl, osl, requests), isl, osl)
                record = Record(label=t.label, backend=backend, model=model_id(t), isl=isl, osl=osl,
                                batch_size=s.batch_size, concurrency=runner.concurrency, num_requests=s.num_requests,
                                repeats=s.repeats, warmup_requests=runner.warmup, seed=s.seed, **measured,
                                dtype=runner.dtype, kv_cache_dtype=runner.kv_cache_dtype, engine=runner.engine,
                                engine_version=runner.engine_version, arch=arch, command=runner.command,
                                provenance=provenance(s.seed))
                append_record(path, record)
                written.append(record.to_dict())
                _log_point(record)
        finally:
            runner.close()
    return written


def _log_point(r: Record) -> None:
    ttft = f", TTFT p50 {r.ttft_ms['p50']:.1f} ms" if r.ttft_ms and "p50" in r.ttft_ms else ""
    log.info("%-24s %5d/%-5d %8.3f req/s (%.3f-%.3f), %9.1f output tok/s%s", r.label, r.isl, r.osl,
             r.requests_per_s, r.requests_per_s_min, r.requests_per_s_max, r.output_tokens_per_s, ttft)
    if r.length_mismatch:
        log.warning("%s %d/%d: measured ISL/OSL %.1f/%.1f differ from the requested ones (flagged in the record)",
                    r.label, r.isl, r.osl, r.actual_isl or float("nan"), r.actual_osl or float("nan"))
