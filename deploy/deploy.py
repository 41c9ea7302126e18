"""Deployment folders for TensorRT-LLM and vLLM: the checkpoint, the engine settings, the exact commands, and
a manifest of everything that decides the speed.

    minitron deploy --checkpoint DIR-fp8 --backend trtllm --out DEPLOY            # needs tensorrt_llm (GPU)
    minitron deploy --checkpoint DIR-fp8 --backend trtllm --out DEPLOY --dry-run  # anywhere: folder + commands
    minitron deploy --checkpoint DIR-fp8 --backend trtllm --out DEPLOY --engine tensorrt   # TRT-LLM 1.2.x engine

The folder: `checkpoint/` (the HF or ModelOpt-FP8 unified checkpoint with its tokenizer),
`extra_llm_api_options.yaml` (TensorRT-LLM's PyTorch backend: KV-cache dtype, CUDA graphs with padding, batch
and token limits), `commands.sh`, and `manifest.json` (source model, quantization, KV dtype, build arguments,
library versions, SHA-256 of the weights, the FP8 accuracy measured by `minitron quantize`, the memory
sizing, and what was actually built and run here: never a build that did not happen).

Sizing defaults to one H100 80GB and the paper's batch sizes (64 for the 4B class, 32 for 8B-12B); a batch
whose KV cache cannot fit beside the weights is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import shlex
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from minitron.core.arch import dtype_bytes, kv_bytes_per_token
from minitron.core.errors import BadInput, MissingInput

log = logging.getLogger(__name__)

TARGET_TRTLLM = "1.2"
"""The TensorRT-LLM release line these settings are written for (the last with the TensorRT engine backend)."""
BACKENDS = ("trtllm", "vllm")
PAPER_BATCH = {"4B class": 64, "8B-12B class": 32}


@dataclass
class Sizing:
    """Memory of one deployment on one GPU, in GB (1e9 bytes)."""

    gpu_memory_gb: float
    weights_gb: float
    kv_cache_gb: float
    kv_bytes_per_token: int
    max_batch_size: int
    max_seq_len: int
    max_num_tokens: int
    free_gpu_memory_fraction: float
    fits: bool


def checkpoint_facts(folder: Path) -> dict:
    """What the checkpoint is: architecture, parameter counts, quantization, KV dtype, and its record."""
    from minitron.core.arch import Dims, count_params
    from minitron.core.families import check_supported
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise MissingInput(f"{folder} is not a checkpoint folder (no config.json); pass the output of "
                                "`minitron quantize` or a pruned/distilled model folder")
    config = AutoConfig.from_pretrained(folder)
    family = check_supported(config)
    quant_file = folder / "hf_quant_config.json"
    quant = json.loads(quant_file.read_text()).get("quantization", {}) if quant_file.is_file() else {}
    algo = (quant.get("quant_algo") or "").upper()
    if algo not in ("", "FP8"):
        raise BadInput(f"{folder} is quantized with {algo}; these deployment settings cover FP8 and BF16 only")
    record_file = folder / "minitron.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    return {"config": config, "family": family, "dims": Dims.of(config), "params": count_params(config),
            "quantization": "fp8" if algo == "FP8" else "bf16",
            "kv_cache_dtype": "fp8" if (quant.get("kv_cache_quant_algo") or "").upper() == "FP8" else "bf16",
            "record": record}


def size_deployment(facts: dict, gpu_memory_gb: float = 80.0, max_batch_size: int | None = None,
                    max_seq_len: int | None = None, max_num_tokens: int = 8192,
                    free_gpu_memory_fraction: float = 0.9) -> Sizing:
    """The paper's batch size for the model's class (or the one asked for), checked against the GPU memory:
    weights (FP8 linear layers at 1 byte, embeddings and lm_head at 2) plus the KV cache of a full batch at
    max_seq_len must fit in the fraction TensorRT-LLM may use."""
    for flag, value in (("--max-batch-size", max_batch_size), ("--max-seq-len", max_seq_len),
                        ("--max-num-tokens", max_num_tokens), ("--gpu-memory-gb", gpu_memory_gb)):
        if value is not None and value <= 0:
            raise BadInput(f"{flag} must be positive, got {value}")
    d, params = facts["dims"], facts["params"]
    embedding = params["params"] - params["non_embedding_params"]
    bytes_linear = 1 if facts["quantization"] == "fp8" else 2
    weights = params["non_embedding_params"] * bytes_linear + embedding * 2
    kv_per_token = int(kv_bytes_per_token(d.layers, d.kv_heads, d.head_dim, dtype_bytes(facts["kv_cache_dtype"])))
    seq = max_seq_len or min(8192, facts["config"].max_position_embeddings)
    batch = max_batch_size or (PAPER_BATCH["4B class"] if params["params"] < 6e9 else PAPER_BATCH["8B-12B class"])
    kv = batch * seq * kv_per_token
    budget = gpu_memory_gb * 1e9 * free_gpu_memory_fraction
    fits = weights + kv <= budget
    sizing = Sizing(gpu_memory_gb, weights / 1e9, kv / 1e9, kv_per_token, batch, seq, max_num_tokens,
                    free_gpu_memory_fraction, fits)
    if not fits:
        largest = int((budget - weights) // (seq * kv_per_token))
        raise BadInput(f"batch {batch} x {seq} tokens needs {kv / 1e9:.1f} GB of KV cache beside {weights / 1e9:.1f} "
                         f"GB of weights, more than {free_gpu_memory_fraction:.0%} of {gpu_memory_gb:g} GB; use "
                         f"--max-batch-size {max(largest, 0)} or less or a shorter --max-seq-len"
                         + ("" if facts["kv_cache_dtype"] == "fp8" else ", or an FP8 KV cache (minitron quantize --kv-cache fp8)"))
    return sizing


def trtllm_options(facts: dict, sizing: Sizing, engine: str | None = None) -> dict:
    """extra_llm_api_options.yaml. PyTorch backend: the KV dtype is pinned (left to itself TensorRT-LLM turns on
    an FP8 KV cache for any FP8 checkpoint, which would make BF16-vs-FP8 comparisons unfair) and CUDA graphs pad
    to the batch. TensorRT engine: the KV dtype and the limits are baked in at build time, and the backend
    rejects `cuda_graph_config` and any KV dtype but auto, so only the memory fraction is left to set."""
    if engine == "tensorrt":
        return {"kv_cache_config": {"free_gpu_memory_fraction": sizing.free_gpu_memory_fraction}}
    return {
        "max_batch_size": sizing.max_batch_size,
        "max_num_tokens": sizing.max_num_tokens,
        "max_seq_len": sizing.max_seq_len,
        "kv_cache_config": {"dtype": "fp8" if facts["kv_cache_dtype"] == "fp8" else "auto",
                            "free_gpu_memory_fraction": sizing.free_gpu_memory_fraction},
        "cuda_graph_config": {"enable_padding": True, "max_batch_size": sizing.max_batch_size},
    }


ISL, OSL = "\0ISL", "\0OSL"  # stand-ins for the benchmark's lengths, left as shell variables


def shell(argv: list[str]) -> str:
    return " ".join('"$ISL"' if a == ISL else '"$OSL"' if a == OSL else shlex.quote(a) for a in argv)


def commands(backend: str, folder: Path, facts: dict, sizing: Sizing, engine: str | None) -> dict[str, str]:
    """The exact shell commands to serve and benchmark this deployment."""
    ckpt, options = folder / "checkpoint", folder / "extra_llm_api_options.yaml"
    name = facts["config"].name_or_path or folder.name
    b = sizing.max_batch_size
    if backend == "vllm":
        quant = ["--quantization", "modelopt"] if facts["quantization"] == "fp8" else []
        kv = ["--kv-cache-dtype", "fp8"] if facts["kv_cache_dtype"] == "fp8" else []
        serve = ["vllm", "serve", str(ckpt), *quant, *kv, "--max-num-seqs", str(b), "--max-model-len",
                 str(sizing.max_seq_len), "--gpu-memory-utilization", str(sizing.free_gpu_memory_fraction)]
        bench = ["vllm", "bench", "throughput", "--model", str(ckpt), *quant, *kv, "--dataset-name", "random",
                 "--random-input-len", ISL, "--random-output-len", OSL, "--random-range-ratio", "0",
                 "--num-prompts", str(4 * b), "--max-num-seqs", str(b), "--output-json", "vllm-throughput.json"]
        return {"serve": shell(serve), "bench": shell(bench)}
    engine_dir = folder / "engine"
    model_path = engine_dir if engine == "tensorrt" else ckpt
    backend_flag = "tensorrt" if engine == "tensorrt" else "pytorch"
    limits = [] if engine == "tensorrt" else ["--max_batch_size", str(b), "--max_num_tokens", str(sizing.max_num_tokens),
                                              "--max_seq_len", str(sizing.max_seq_len)]  # an engine has its own
    serve = ["trtllm-serve", str(model_path), "--host", "0.0.0.0", "--port", "8000", "--backend", backend_flag,
             *limits, "--extra_llm_api_options", str(options)]
    prepare = ["trtllm-bench", "--model", name, "--model_path", str(ckpt), "prepare-dataset", "--output",
               "dataset.jsonl", "token-norm-dist", "--num-requests", str(4 * b), "--input-mean", ISL,
               "--input-stdev", "0", "--output-mean", OSL, "--output-stdev", "0"]
    throughput = ["trtllm-bench", "--model", name, "--model_path", str(ckpt), "throughput", "--dataset",
                  "dataset.jsonl", "--backend", backend_flag, "--concurrency", str(b), "--streaming",
                  "--report_json", "report.json", "--extra_llm_api_options", str(options)]
    throughput += ["--engine_dir", str(engine_dir)] if engine == "tensorrt" else ["--max_batch_size", str(b)]
    out = {"serve": shell(serve), "bench_prepare": shell(prepare), "bench_throughput": shell(throughput)}
    if engine == "tensorrt":
        out["build"] = shell(["minitron", "deploy", "--checkpoint", str(ckpt), "--backend", "trtllm",
                              "--engine", "tensorrt", "--out", str(folder)])
    return out


def library_versions() -> dict:
    versions = {}
    for dist in ("torch", "transformers", "nvidia-modelopt", "tensorrt-llm", "tensorrt_llm", "vllm"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def weight_checksums(folder: Path) -> dict[str, str]:
    sums = {}
    for path in sorted(folder.glob("*.safetensors")):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        sums[path.name] = digest.hexdigest()
    return sums


def engine_available(backend: str) -> str | None:
    """The installed engine's version, or None (probed without importing: tensorrt_llm needs libcuda)."""
    module = "tensorrt_llm" if backend == "trtllm" else "vllm"
    if importlib.util.find_spec(module) is None:
        return None
    for dist in (("tensorrt-llm", "tensorrt_llm") if backend == "trtllm" else ("vllm",)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


INSTALL_HINT = {
    "trtllm": "TensorRT-LLM is not installed here: on an H100 machine use NVIDIA's container "
              "(nvcr.io/nvidia/tensorrt-llm/release) or `pip install tensorrt-llm` from NVIDIA's index; "
              "or pass --dry-run to write the folder and commands without it",
    "vllm": "vLLM is not installed here: `pip install vllm` on a machine with an NVIDIA GPU (compute capability "
            ">= 8.9 for FP8); or pass --dry-run to write the folder and commands without it",
}


def build_tensorrt_engine(ckpt: Path, engine_dir: Path, facts: dict, sizing: Sizing) -> None:
    """A serialized TensorRT engine through the LLM API of TensorRT-LLM 1.2.x, with FP8 context attention and
    paged context FMHA (the TensorRT backend is gone from later releases)."""
    from tensorrt_llm._tensorrt_engine import LLM
    from tensorrt_llm.llmapi import BuildConfig, KvCacheConfig

    build = BuildConfig(max_batch_size=sizing.max_batch_size, max_seq_len=sizing.max_seq_len,
                        max_num_tokens=sizing.max_num_tokens)
    build.plugin_config.use_paged_context_fmha = True
    build.plugin_config.use_fp8_context_fmha = facts["quantization"] == "fp8"
    llm = LLM(model=str(ckpt), build_config=build,
              kv_cache_config=KvCacheConfig(dtype="fp8" if facts["kv_cache_dtype"] == "fp8" else "auto"))
    llm.save(str(engine_dir))


def smoke_generate(backend: str, model_path: Path, facts: dict, engine: str | None) -> dict:
    """Load the deployment in its engine and generate a few tokens."""
    prompt = "The capital of France is"
    if backend == "trtllm":
        from tensorrt_llm import LLM, SamplingParams
        from tensorrt_llm.llmapi import KvCacheConfig

        if engine == "tensorrt":
            from tensorrt_llm._tensorrt_engine import LLM
        llm = LLM(model=str(model_path),
                  kv_cache_config=KvCacheConfig(dtype="fp8" if facts["kv_cache_dtype"] == "fp8" else "auto"))
        text = llm.generate([prompt], SamplingParams(max_tokens=8))[0].outputs[0].text
    else:
        from vllm import LLM, SamplingParams

        kwargs = {"quantization": "modelopt"} if facts["quantization"] == "fp8" else {}
        if facts["kv_cache_dtype"] == "fp8":
            kwargs["kv_cache_dtype"] = "fp8"
        text = LLM(model=str(model_path), **kwargs).generate([prompt], SamplingParams(max_tokens=8))[0].outputs[0].text
    return {"prompt": prompt, "completion": text}


def deploy(checkpoint: str | Path, backend: str, out: str | Path, engine: str | None = None,
           max_batch_size: int | None = None, max_seq_len: int | None = None, max_num_tokens: int = 8192,
           gpu_memory_gb: float = 80.0, dry_run: bool = False, overwrite: bool = False) -> dict:
    """Write the deployment folder; build and smoke-test it when the engine is installed. Returns the manifest."""
    from minitron.core.families import engine_caveat
    from minitron.core.records import check_output_dir, output_dir, provenance

    if backend not in BACKENDS:
        raise BadInput(f"--backend {backend!r} is unknown; choose from {', '.join(BACKENDS)}")
    if engine not in (None, "tensorrt") or (engine and backend != "trtllm"):
        raise BadInput("--engine tensorrt is the only engine option, and only with --backend trtllm")
    out, checkpoint = Path(out), Path(checkpoint)
    check_output_dir(out, overwrite, reads=(checkpoint,))
    facts = checkpoint_facts(checkpoint)
    sizing = size_deployment(facts, gpu_memory_gb, max_batch_size, max_seq_len, max_num_tokens)
    caveat = engine_caveat(facts["family"], backend)
    if caveat:
        log.warning(caveat)
    version = engine_available(backend)
    if version is None and not dry_run:
        raise BadInput(INSTALL_HINT[backend])
    if engine == "tensorrt" and version and not dry_run and not version.startswith(TARGET_TRTLLM):
        raise BadInput(f"--engine tensorrt needs TensorRT-LLM {TARGET_TRTLLM}.x (found {version}): the TensorRT "
                         "engine backend was removed after it; deploy with the PyTorch backend instead")
    with output_dir(out, overwrite) as tmp:
        shutil.copytree(checkpoint, tmp / "checkpoint", ignore=shutil.ignore_patterns("state", "metrics.jsonl"))
        options = trtllm_options(facts, sizing, engine)
        if backend == "trtllm":
            (tmp / "extra_llm_api_options.yaml").write_text(yaml.safe_dump(options, sort_keys=False))
        cmds = commands(backend, out.resolve(), facts, sizing, engine)
        (tmp / "commands.sh").write_text("#!/usr/bin/env bash\n# ISL/OSL for the benchmark lines: export ISL=128 "
                                         "OSL=128\n" + "\n".join(cmds.values()) + "\n")
        built = smoke = None
        if not dry_run:
            if engine == "tensorrt":
                build_tensorrt_engine(tmp / "checkpoint", tmp / "engine", facts, sizing)
                built = {"engine": "tensorrt", "path": "engine"}
            smoke = smoke_generate(backend, tmp / ("engine" if engine else "checkpoint"), facts, engine)
        record = facts["record"]
        manifest = {
            "backend": backend, "engine": engine or ("pytorch" if backend == "trtllm" else "vllm"),
            "target_engine_version": f"tensorrt-llm {TARGET_TRTLLM}.x" if backend == "trtllm" else "vllm",
            "installed_engine_version": version, "engine_caveat": caveat,
            "source_model": record.get("source") or str(checkpoint), "checkpoint": str(checkpoint),
            "quantization": facts["quantization"], "kv_cache_dtype": facts["kv_cache_dtype"],
            "max_batch_size": sizing.max_batch_size, "max_num_tokens": sizing.max_num_tokens,
            "max_seq_len": sizing.max_seq_len, "sizing": asdict(sizing), "params": facts["params"],
            "extra_llm_api_options": options if backend == "trtllm" else None,
            "fp8_accuracy": record.get("accuracy"), "export_check": record.get("export_check"),
            "weights_sha256": weight_checksums(tmp / "checkpoint"), "versions": library_versions(),
            "commands": cmds, "dry_run": dry_run,
            "built": built or ("nothing: dry run" if dry_run else "nothing to build (the engine loads the checkpoint)"),
            "smoke_test": smoke or "not run: dry run",
            "provenance": provenance(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest
