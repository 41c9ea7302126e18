"""vLLM, on an HF checkpoint folder or a deployment folder made by `minitron deploy --backend vllm`.

    minitron bench sweep --backend vllm --model deploy/llama-4b-depth --out results/bench/h100 --batch-size 64

Two ways in, chosen by what is installed:

- vLLM importable in this Python: its LLM API, with our prompts as `TokensPrompt`s (exact ISL) and
  `SamplingParams(max_tokens=OSL, min_tokens=OSL, ignore_eos=True, temperature=0)`; one engine per model,
  loaded once for the whole grid; a warm-up `generate` before the repeats. Prompt and output token counts
  come from the returned `RequestOutput`s.
- otherwise `vllm` on PATH (vLLM in an environment of its own, as its pinned torch/transformers usually
  require): per grid point and repeat

      vllm bench throughput --model CKPT --dataset-name random --input-len ISL --output-len OSL \
          --random-range-ratio 0 --num-prompts N --max-num-seqs B --seed S --output-json OUT/raw/...json \
          [--quantization modelopt] [--kv-cache-dtype fp8]

  Its random prompts are decoded to text and re-tokenized, so they come out a few tokens off the asked
  ISL: the measured lengths (the "Total num prompt/output tokens" it prints) are recorded and the record is
  flagged. Its JSON has elapsed_time, num_requests, total_num_tokens, requests_per_second,
  tokens_per_second. vLLM sizes the context from the model (no --max-model-len), since those prompts may
  run a little past ISL.

Neither reports TTFT/TPOT for offline runs; for those serve the model (`vllm serve CKPT ...`) and use
`--backend openai`.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from minitron.bench.process import run_logged
from minitron.bench.records import Repeat
from minitron.bench.target import Target
from minitron.core.errors import EngineFailed, EngineUnavailable

INSTALL_HINT = ("install vLLM on a machine with a GPU (`pip install vllm`, best in its own environment whose bin/ "
                "is on PATH); or benchmark here with --backend hf")
WARMUP_MAX_TOKENS = 32


def available() -> str:
    """'api' when vLLM imports here, 'cli' when only its command is on PATH; else EngineUnavailable."""
    if importlib.util.find_spec("vllm") is not None:
        return "api"
    if shutil.which("vllm"):
        return "cli"
    raise EngineUnavailable(f"vLLM is neither importable here nor on PATH: {INSTALL_HINT}")


def engine_args(target: Target) -> dict:
    """Quantization and KV-cache settings of the deployment, as LLM()/CLI keyword arguments."""
    args = {}
    if target.quantization == "fp8":
        args["quantization"] = "modelopt"  # ModelOpt's unified FP8 checkpoint (hf_quant_config.json)
    if target.kv_cache_dtype == "fp8":
        args["kv_cache_dtype"] = "fp8"
    return args


def throughput_command(target: Target, isl: int, osl: int, num_requests: int, batch_size: int, seed: int,
                       output_json: Path) -> list[str]:
    """The `vllm bench throughput` argv for one run."""
    cmd = ["vllm", "bench", "throughput", "--model", str(target.checkpoint), "--dataset-name", "random",
           "--input-len", str(isl), "--output-len", str(osl), "--random-range-ratio", "0",
           "--num-prompts", str(num_requests), "--max-num-seqs", str(batch_size), "--seed", str(seed),
           "--output-json", str(output_json)]
    for key, value in engine_args(target).items():
        cmd += [f"--{key.replace('_', '-')}", value]
    return cmd


def parse_throughput(report: dict, stdout: str = "", osl: int | None = None) -> Repeat:
    """`vllm bench throughput --output-json` (plus the token totals it prints) -> one Repeat."""
    try:
        elapsed, n, total = float(report["elapsed_time"]), int(report["num_requests"]), int(report["total_num_tokens"])
        requests_per_s, tokens_per_s = float(report["requests_per_second"]), float(report["tokens_per_second"])
    except (KeyError, TypeError, ValueError) as err:
        raise EngineFailed(f"the vllm report lacks {err}; is this a `vllm bench throughput --output-json` "
                           "file?") from None
    prompt = re.search(r"Total num prompt tokens:\s+(\d+)", stdout)
    output = re.search(r"Total num output tokens:\s+(\d+)", stdout)
    if prompt and output:
        prompt_tokens, output_tokens, measured_osl = int(prompt[1]), int(output[1]), int(output[1]) / n
    elif osl is not None:  # an older vLLM prints no totals; its throughput run forces OSL (ignore_eos, max_tokens)
        output_tokens, measured_osl = n * osl, None
        prompt_tokens = total - output_tokens
    else:
        raise EngineFailed("vllm bench throughput printed no 'Total num prompt/output tokens' lines; pass the OSL")
    return Repeat(requests_per_s=requests_per_s, output_tokens_per_s=output_tokens / elapsed,
                  total_tokens_per_s=tokens_per_s, actual_isl=prompt_tokens / n, actual_osl=measured_osl,
                  elapsed_s=elapsed)


def cli_version() -> str | None:
    try:
        done = subprocess.run(["vllm", "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[-1].strip() if done.returncode == 0 and lines else None


class Runner:
    engine = "vllm"

    def __init__(self, target: Target, batch_size: int, repeats: int, warmup: int, seed: int, max_seq_len: int,
                 raw_dir: Path, timeout: float | None = None):
        self.mode = available()
        self.target, self.batch_size, self.repeats, self.warmup, self.seed = target, batch_size, repeats, warmup, seed
        self.raw_dir, self.timeout = raw_dir, timeout
        self.dtype, self.kv_cache_dtype = target.weight_dtype, target.kv_cache_dtype
        self.concurrency = batch_size
        self.command = None
        if self.mode == "api":
            import vllm

            self.engine_version = vllm.__version__
            self.llm = vllm.LLM(model=str(target.checkpoint), max_num_seqs=batch_size, max_model_len=max_seq_len,
                                seed=seed, **engine_args(target))
        else:
            self.engine_version = cli_version()
            self.warmup = 0  # vllm bench throughput has no warm-up of its own; the engine start captures graphs

    def measure(self, isl: int, osl: int, requests: list[list[int]]) -> list[Repeat]:
        if self.mode == "cli":
            return [self._cli_repeat(isl, osl, len(requests), r) for r in range(self.repeats)]
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=r) for r in requests]
        if self.warmup > 0:
            short = SamplingParams(max_tokens=min(osl, WARMUP_MAX_TOKENS), ignore_eos=True, temperature=0.0)
            self.llm.generate(prompts[:self.warmup], short, use_tqdm=False)
        params = SamplingParams(max_tokens=osl, min_tokens=osl, ignore_eos=True, temperature=0.0, detokenize=False)
        repeats = []
        for _ in range(self.repeats):
            start = time.perf_counter()
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            elapsed = time.perf_counter() - start
            n = len(outputs)
            prompt_tokens = sum(len(o.prompt_token_ids) for o in outputs)
            output_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
            repeats.append(Repeat(requests_per_s=n / elapsed, output_tokens_per_s=output_tokens / elapsed,
                                  total_tokens_per_s=(prompt_tokens + output_tokens) / elapsed,
                                  actual_isl=prompt_tokens / n, actual_osl=output_tokens / n, elapsed_s=elapsed))
        return repeats

    def _cli_repeat(self, isl: int, osl: int, num_requests: int, r: int) -> Repeat:
        stem = self.raw_dir / f"{self.target.label}-{isl}x{osl}-b{self.batch_size}-r{r}"
        report = stem.with_suffix(".vllm.json")
        self.command = throughput_command(self.target, isl, osl, num_requests, self.batch_size, self.seed, report)
        stdout = run_logged(self.command, stem.with_suffix(".log"), self.timeout)
        if not report.is_file():
            raise EngineFailed(f"vllm bench throughput exited without writing {report}; see {stem}.log")
        return parse_throughput(json.loads(report.read_text()), stdout, osl)

    def close(self) -> None:
        """Drop the engine: vLLM stops its engine process and frees the GPU when the LLM object goes."""
        self.__dict__.pop("llm", None)
        gc.collect()
