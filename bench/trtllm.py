"""TensorRT-LLM through `trtllm-bench`, on a deployment folder made by `minitron deploy --backend trtllm`.

    minitron deploy --checkpoint llama-8b-fp8 --backend trtllm --out deploy/llama-8b
    minitron bench sweep --backend trtllm --model deploy/llama-8b --out results/bench/h100 --batch-size 32 \
        --num-requests 1024 --repeats 3                         # the paper's Figure 10 grid and batch (8B)

For each grid point and repeat this runs (the dataset written by us, in the format `trtllm-bench
prepare-dataset` writes, so every backend benchmarks the same prompts from the same seed):

    trtllm-bench --model DIR/checkpoint --model_path DIR/checkpoint throughput --dataset OUT/raw/...jsonl \
        --backend pytorch --max_batch_size B --concurrency B --num_requests N --warmup W --eos_id -1 \
        --streaming --report_json OUT/raw/...json --extra_llm_api_options DIR/extra_llm_api_options.yaml

`--eos_id -1` disables EOS, so every request generates exactly OSL tokens; `--streaming` makes the report
carry TTFT and TPOT. The report (`--report_json`) is parsed into the common schema: `performance`
(request_throughput_req_s, system_output_throughput_tok_s, system_total_throughput_tok_s, total_latency_ms),
`request_info` (avg_input_length, avg_output_length: the measured ISL/OSL), `streaming_metrics` (avg_ttft_ms,
avg_tpot_ms, ttft_percentiles, tpot_percentiles), `engine` (version, dtype, kv_cache_dtype, quantization).
The KV dtype is the one the engine reports, not the one asked for: TensorRT-LLM turns on an FP8 KV cache for
FP8 checkpoints unless the deployment's options pin it, and a mismatch with the manifest is logged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from minitron.bench.process import require_binary, run_logged
from minitron.bench.records import Repeat
from minitron.bench.target import Target, normalize_dtype
from minitron.bench.workload import write_trtllm_dataset
from minitron.core.errors import EngineFailed

log = logging.getLogger(__name__)

INSTALL_HINT = ("install TensorRT-LLM on a machine with an NVIDIA GPU (`pip install tensorrt-llm` from NVIDIA's "
                "index, or its container) and put its bin/ on PATH; or benchmark here with --backend hf")


def throughput_command(target: Target, dataset: Path, report: Path, batch_size: int, num_requests: int,
                       warmup: int) -> list[str]:
    """The `trtllm-bench ... throughput` argv for one run on a deployment folder."""
    checkpoint = str(target.checkpoint)
    engine = (target.manifest or {}).get("engine")
    cmd = ["trtllm-bench", "--model", checkpoint, "--model_path", checkpoint, "throughput",
           "--dataset", str(dataset), "--backend", "tensorrt" if engine == "tensorrt" else "pytorch",
           "--max_batch_size", str(batch_size), "--concurrency", str(batch_size),
           "--num_requests", str(num_requests), "--warmup", str(warmup), "--eos_id", "-1",
           "--streaming", "--report_json", str(report)]
    if engine == "tensorrt":
        cmd += ["--engine_dir", str(target.folder / "engine")]
    options = target.folder / "extra_llm_api_options.yaml"
    if options.is_file():
        cmd += ["--extra_llm_api_options", str(options)]
    return cmd


def _latency(stats: dict | None, mean: float | None) -> dict | None:
    """trtllm-bench's percentile block ({average, p50, p90, p95, p99, minimum, maximum}, ms) -> ours."""
    stats = stats or {}
    out = {"mean": mean if mean is not None else stats.get("average")}
    out.update({k: stats[k] for k in ("p50", "p90", "p99") if k in stats})
    out = {k: float(v) for k, v in out.items() if v is not None}
    return out or None


def parse_report(report: dict) -> tuple[Repeat, dict]:
    """A `--report_json` report -> one Repeat and the engine facts (version, dtype, kv_cache_dtype)."""
    try:
        perf, requests = report["performance"], report["request_info"]
        repeat = Repeat(requests_per_s=float(perf["request_throughput_req_s"]),
                        output_tokens_per_s=float(perf["system_output_throughput_tok_s"]),
                        total_tokens_per_s=float(perf["system_total_throughput_tok_s"]),
                        actual_isl=float(requests["avg_input_length"]),
                        actual_osl=float(requests["avg_output_length"]),
                        elapsed_s=float(perf["total_latency_ms"]) / 1e3)
    except (KeyError, TypeError, ValueError) as err:
        raise EngineFailed(f"the trtllm-bench report lacks {err} in its performance/request_info sections; is "
                           "this a `trtllm-bench throughput --report_json` file?") from None
    streaming = report.get("streaming_metrics") or {}
    repeat.ttft_ms = _latency(streaming.get("ttft_percentiles"), streaming.get("avg_ttft_ms"))
    repeat.tpot_ms = _latency(streaming.get("tpot_percentiles"), streaming.get("avg_tpot_ms"))
    engine = report.get("engine") or {}
    activations = _dtype(engine.get("dtype"))
    facts = {"engine_version": engine.get("version"),
             "dtype": _dtype(engine.get("quantization")) or activations,
             "kv_cache_dtype": _dtype(engine.get("kv_cache_dtype")) or activations}
    return repeat, facts


def _dtype(name) -> str | None:
    """Our dtype name where we know it; an engine's other quantization names (W4A16_AWQ, ...) as given."""
    try:
        return normalize_dtype(name)
    except ValueError:
        return str(name).lower()


class Runner:
    """One trtllm-bench process per repeat; the engine's own warm-up (--warmup requests) precedes each."""

    engine = "tensorrt-llm"

    def __init__(self, target: Target, batch_size: int, repeats: int, warmup: int, raw_dir: Path,
                 timeout: float | None = None):
        require_binary("trtllm-bench", INSTALL_HINT)
        self.target, self.batch_size, self.repeats, self.warmup = target, batch_size, repeats, warmup
        self.raw_dir, self.timeout = raw_dir, timeout
        self.engine_version = (target.manifest or {}).get("installed_engine_version")
        self.dtype, self.kv_cache_dtype = target.weight_dtype, target.kv_cache_dtype
        self.concurrency = batch_size
        self.command = None

    def measure(self, isl: int, osl: int, requests: list[list[int]]) -> list[Repeat]:
        stem = self.raw_dir / f"{self.target.label}-{isl}x{osl}-b{self.batch_size}"
        dataset = write_trtllm_dataset(stem.with_suffix(".dataset.jsonl"), requests, osl)
        repeats = []
        for r in range(self.repeats):
            report = Path(f"{stem}-r{r}.report.json")
            self.command = throughput_command(self.target, dataset, report, self.batch_size, len(requests),
                                              self.warmup)
            run_logged(self.command, Path(f"{stem}-r{r}.log"), self.timeout)
            if not report.is_file():
                raise EngineFailed(f"trtllm-bench exited without writing {report}; see {stem}-r{r}.log")
            repeat, facts = parse_report(json.loads(report.read_text()))
            if facts["kv_cache_dtype"] and self.kv_cache_dtype and facts["kv_cache_dtype"] != self.kv_cache_dtype:
                log.warning("%s: the engine ran a %s KV cache, the manifest says %s; recording the engine's",
                            self.target.label, facts["kv_cache_dtype"], self.kv_cache_dtype)
            self.engine_version = facts["engine_version"] or self.engine_version
            self.dtype = facts["dtype"] or self.dtype
            self.kv_cache_dtype = facts["kv_cache_dtype"] or self.kv_cache_dtype
            repeats.append(repeat)
        return repeats

    def close(self) -> None:
        """Nothing is held between runs: each trtllm-bench process loads and frees the engine."""
