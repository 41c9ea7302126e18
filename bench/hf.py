"""The embedded backend: transformers `generate` with static batches and a KV cache, on CPU or GPU.

CPU smoke run (seconds):
    minitron bench sweep --backend hf --model work/tiny/embedded/teacher --out work/bench-cpu \
        --isl-osl 32/16,64/32 --batch-size 4 --num-requests 8 --repeats 2
On a GPU, in BF16:
    minitron bench sweep --backend hf --model DIR --out results/bench/hf-h100 --device cuda --dtype bfloat16 \
        --isl-osl 128/128,2048/128 --batch-size 32

All requests of a grid point have the same ISL, so a batch is one [B, ISL] tensor with no padding, and
`generate(min_new_tokens=OSL, max_new_tokens=OSL, do_sample=False)` under `torch.inference_mode()` makes exactly
OSL tokens (EOS is suppressed until OSL). The requests are split into batches of --batch-size that run one
after another; a repeat's throughput is its requests over the wall time of all its batches.

TTFT and TPOT come from the same `generate` call, not a second one: a stopping criterion that never stops
records the time of every generated token (transformers calls it once per token, after the token is chosen).
TTFT is the first token's time from the start of its batch (prefill plus one sampling step); TPOT is the mean
gap of the remaining OSL-1 tokens. On CUDA the clock synchronizes first, where `generate` would synchronize
a moment later anyway to check for finished sequences. `tests/benchmarks/bench_harness_overhead.py` checks
that this decode loop keeps >= 0.9x the throughput of a plain `model.generate`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from minitron.bench.records import Repeat, latency_stats
from minitron.bench.target import Target, normalize_dtype
from minitron.core.errors import BadInput
from minitron.core.precision import resolve_device
from transformers import StoppingCriteria, StoppingCriteriaList

log = logging.getLogger(__name__)

RUNNABLE_DTYPES = ("bfloat16", "float16", "float32")
WARMUP_MAX_TOKENS = 32
"""The warm-up batch runs the full prompt but at most this many decode steps: enough to set up thread pools,
allocator caches and kernels for both phases without doubling the run."""


class StepClock(StoppingCriteria):
    """Records the time of every generated token and never stops generation."""

    def __init__(self, batch: int, device: torch.device):
        self.times: list[float] = []
        self.cuda = device.type == "cuda"
        self.never = torch.zeros(batch, dtype=torch.bool, device=device)

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        return self.never


@dataclass
class BatchTiming:
    elapsed_s: float
    ttft_s: float
    """From the start of the batch to its first generated token."""
    new_tokens: int
    """Generated tokens per sequence, measured from the output."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def generate_batch(model, input_ids: torch.Tensor, osl: int) -> BatchTiming:
    """One static batch through `generate`, forced to `osl` new tokens, timed per token."""
    device = input_ids.device
    clock = StepClock(input_ids.shape[0], device)
    _sync(device)
    start = time.perf_counter()
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=osl,
                         min_new_tokens=osl, do_sample=False, use_cache=True,
                         stopping_criteria=StoppingCriteriaList([clock]))
    _sync(device)
    end = time.perf_counter()
    return BatchTiming(end - start, clock.times[0] - start, out.shape[1] - input_ids.shape[1])


def load(target: Target, device: str = "auto", dtype: str = "auto"):
    """The model in eval mode on `device` ('auto': CUDA when there is one) in `dtype` ('auto': the checkpoint's)."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    if dtype != "auto" and normalize_dtype(dtype) not in RUNNABLE_DTYPES:
        raise BadInput(f"--dtype {dtype}: the hf backend runs {', '.join(RUNNABLE_DTYPES)} (or auto, the "
                         "checkpoint's); benchmark FP8 with --backend trtllm or vllm")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, normalize_dtype(dtype))
    model = AutoModelForCausalLM.from_pretrained(target.checkpoint, config=target.config, dtype=torch_dtype)
    if model.generation_config.pad_token_id is None:  # batches are unpadded; this only silences generate's warning
        eos = target.config.eos_token_id
        model.generation_config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return model.to(device).eval()


class Runner:
    """Measures grid points on one model held in memory."""

    engine = "transformers"

    def __init__(self, target: Target, batch_size: int, repeats: int, warmup: int, device: str = "auto",
                 dtype: str = "auto"):
        import transformers

        self.model = load(target, device, dtype)
        self.device = next(self.model.parameters()).device
        self.batch_size, self.repeats, self.warmup = batch_size, repeats, warmup
        self.engine_version = transformers.__version__
        self.dtype = self.kv_cache_dtype = normalize_dtype(self.model.dtype)
        self.concurrency = batch_size
        self.command = None

    def measure(self, isl: int, osl: int, requests: list[list[int]]) -> list[Repeat]:
        ids = torch.tensor(requests, dtype=torch.long, device=self.device)
        batches = list(ids.split(self.batch_size))
        warm = batches[:-(-self.warmup // self.batch_size)] if self.warmup > 0 else []
        with torch.inference_mode():
            for batch in warm:
                generate_batch(self.model, batch, min(osl, WARMUP_MAX_TOKENS))
            return [self._repeat(batches, isl, osl) for _ in range(self.repeats)]

    def _repeat(self, batches: list[torch.Tensor], isl: int, osl: int) -> Repeat:
        timings = [generate_batch(self.model, batch, osl) for batch in batches]
        elapsed = sum(t.elapsed_s for t in timings)
        sizes = [len(b) for b in batches]
        n = sum(sizes)
        ttft = [t.ttft_s * 1e3 for t, size in zip(timings, sizes) for _ in range(size)]
        tpot = [(t.elapsed_s - t.ttft_s) * 1e3 / (t.new_tokens - 1) for t, size in zip(timings, sizes)
                for _ in range(size) if t.new_tokens > 1]
        new_tokens = sum(t.new_tokens * size for t, size in zip(timings, sizes))
        return Repeat(requests_per_s=n / elapsed, output_tokens_per_s=new_tokens / elapsed,
                      total_tokens_per_s=(n * isl + new_tokens) / elapsed, actual_isl=float(batches[0].shape[1]),
                      actual_osl=new_tokens / n, ttft_ms=latency_stats(ttft), tpot_ms=latency_stats(tpot),
                      elapsed_s=elapsed)

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
