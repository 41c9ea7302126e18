"""Any OpenAI-compatible completions server (`trtllm-serve`, `vllm serve`), with TTFT and TPOT from streaming.

    trtllm-serve deploy/llama-8b/checkpoint --extra_llm_api_options deploy/llama-8b/extra_llm_api_options.yaml &
    minitron bench sweep --backend openai --model http://localhost:8000/v1 --tokenizer deploy/llama-8b \
        --out results/bench/serve --batch-size 32 --label llama-8b

Every request streams `/v1/completions` with the prompt as token ids (`prompt: [ids]` is part of the
completions API, so the ISL is exact), `max_tokens = min_tokens = OSL` and `ignore_eos: true` (an extra
parameter both vLLM and TensorRT-LLM accept), greedy, and `stream_options.include_usage` so the last chunk
reports the prompt and completion token counts the server really processed. --batch-size requests are in
flight at once (a thread pool over blocking HTTP, no extra dependency); a repeat's throughput is its
requests over its wall time. Per request, TTFT is the time to the first streamed chunk and TPOT the mean gap
over the remaining OSL-1 tokens. The server is probed (`GET /v1/models`, 5 s) before anything runs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from minitron.bench.records import Repeat, latency_stats
from minitron.bench.target import Target
from minitron.core.errors import EngineFailed, EngineUnavailable
from minitron.core.server import UNANSWERED, api_root, probe, server_version

WARMUP_MAX_TOKENS = 32


@dataclass
class Streamed:
    """One request's timeline (perf_counter seconds) and the token counts the server reported."""

    start: float
    first: float
    end: float
    prompt_tokens: int | None
    completion_tokens: int


def stream_completion(url: str, model: str, prompt: list[int], osl: int, timeout: float) -> Streamed:
    """POST one streaming completion and read its server-sent events to the end."""
    body = {"model": model, "prompt": prompt, "max_tokens": osl, "min_tokens": osl, "ignore_eos": True,
            "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}}
    request = urllib.request.Request(api_root(url) + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first, chunks, usage, done = None, 0, None, False
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            for raw in reply:
                if time.perf_counter() - start > timeout:  # a server that dribbles never trips the socket timeout
                    raise EngineFailed(f"the server at {url} did not finish a {osl}-token completion within "
                                       f"--timeout {timeout:g} s; check its load and log, or raise --timeout")
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if event.get("choices"):
                    first = first or time.perf_counter()
                    chunks += 1
                usage = event.get("usage") or usage
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:300]
        raise EngineFailed(f"the server refused a completion (HTTP {err.code}): {detail}") from None
    except UNANSWERED as err:
        raise EngineFailed(f"the server at {url} stopped answering mid-run ({err}); records written so far are "
                           "kept: restart the server and rerun the same sweep to resume") from None
    end = time.perf_counter()
    if first is None:
        raise EngineFailed(f"the server at {url} streamed no tokens for a request; check its log")
    if not done:
        raise EngineFailed(f"the server at {url} cut a stream short ({chunks} chunks, no [DONE]); a cut request "
                           "is not a finished one: check its log, then rerun the same sweep to resume")
    if usage and chunks > usage["completion_tokens"]:
        raise EngineFailed(f"the server at {url} reported {usage['completion_tokens']} completion tokens but "
                           f"streamed {chunks} chunks of text; its usage cannot be trusted: check the server")
    return Streamed(start, first, end, usage.get("prompt_tokens") if usage else None,
                    usage["completion_tokens"] if usage else chunks)


class Runner:
    def __init__(self, target: Target, batch_size: int, repeats: int, warmup: int, served_model: str | None = None,
                 timeout: float = 600.0):
        models = probe(target.url)
        if served_model is None and not models:
            raise EngineUnavailable(f"{target.url} serves no models; pass --served-model NAME")
        self.model = served_model or models[0]["id"]
        owner = next((m.get("owned_by") for m in models if m.get("id") == self.model), None)
        self.engine = f"openai-compatible ({owner})" if owner else "openai-compatible"
        self.engine_version = server_version(target.url)
        self.target, self.batch_size, self.repeats, self.warmup, self.timeout = (
            target, batch_size, repeats, warmup, timeout)
        self.dtype, self.kv_cache_dtype = target.weight_dtype, target.kv_cache_dtype
        self.concurrency = batch_size
        self.command = None

    def _run(self, prompts: list[list[int]], osl: int) -> tuple[float, list[Streamed]]:
        with ThreadPoolExecutor(max_workers=self.batch_size) as pool:
            start = time.perf_counter()
            done = list(pool.map(lambda p: stream_completion(self.target.url, self.model, p, osl, self.timeout),
                                 prompts))
            return time.perf_counter() - start, done

    def measure(self, isl: int, osl: int, requests: list[list[int]]) -> list[Repeat]:
        if self.warmup > 0:
            self._run(requests[:self.warmup], min(osl, WARMUP_MAX_TOKENS))
        repeats = []
        for _ in range(self.repeats):
            elapsed, done = self._run(requests, osl)
            n = len(done)
            outputs = sum(d.completion_tokens for d in done)
            prompts = [d.prompt_tokens for d in done]
            prompt_total = sum(prompts) if None not in prompts else None
            repeats.append(Repeat(
                requests_per_s=n / elapsed, output_tokens_per_s=outputs / elapsed,
                total_tokens_per_s=((prompt_total if prompt_total is not None else n * isl) + outputs) / elapsed,
                actual_isl=None if prompt_total is None else prompt_total / n, actual_osl=outputs / n,
                ttft_ms=latency_stats([(d.first - d.start) * 1e3 for d in done]),
                tpot_ms=latency_stats([(d.end - d.first) * 1e3 / (d.completion_tokens - 1)
                                       for d in done if d.completion_tokens > 1]),
                elapsed_s=elapsed))
        return repeats

    def close(self) -> None:
        """The server stays up; nothing is held here."""
