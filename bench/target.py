"""What `--model` names for each backend, checked before anything runs, and what a record needs to know about it.

    hf       an HF checkpoint folder (config.json, weights, tokenizer), BF16/FP16/FP32
    vllm     an HF checkpoint folder, or a deployment folder made by `minitron deploy --backend vllm`
    trtllm   a deployment folder made by `minitron deploy --backend trtllm`
    openai   a server URL (http://host:8000/v1), with --tokenizer naming the served checkpoint's folder

A deployment folder holds `checkpoint/` (an HF or ModelOpt-FP8 unified checkpoint with its tokenizer),
`manifest.json` (quantization, KV-cache dtype, batch and token limits, versions) and, for TensorRT-LLM,
`extra_llm_api_options.yaml`. The architecture summary (`arch`) is stored in every record, so the ideal
speedups of `bench.ideal` are computed later without the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from minitron.core.arch import Dims, count_params, normalize_dtype
from minitron.core.errors import BadInput, MissingInput
from minitron.core.families import check_supported

BACKENDS = ("hf", "vllm", "trtllm", "openai")
QUANTIZED = ("fp8", "int8", "nvfp4")
DEPLOY_HINT = "make one with `minitron deploy --checkpoint CKPT --backend {backend} --out DIR` and pass DIR"

@dataclass
class Target:
    """A model to benchmark, resolved for one backend."""

    model: str
    """As given to --model."""
    label: str
    kind: str
    """'checkpoint', 'deploy' or 'url'."""
    checkpoint: Path
    """The HF-format folder with config.json and the tokenizer (for openai: the --tokenizer folder)."""
    config: object
    manifest: dict | None = None
    url: str | None = None

    @property
    def folder(self) -> Path:
        """The deployment folder (for kind 'deploy')."""
        return self.checkpoint.parent

    @property
    def max_positions(self) -> int | None:
        limits = [getattr(self.config, "max_position_embeddings", None)]
        if self.manifest:
            limits.append(self.manifest.get("max_seq_len"))
        return min((x for x in limits if x), default=None)

    @property
    def quantization(self) -> str | None:
        """'fp8' (or another QUANTIZED type) for a quantized checkpoint, else None."""
        if self.manifest and self.manifest.get("quantization"):
            name = normalize_dtype(self.manifest["quantization"])
        else:
            quant = getattr(self.config, "quantization_config", None) or {}
            name = normalize_dtype(quant.get("quant_algo") if isinstance(quant, dict) else None)
        return name if name in QUANTIZED else None

    @property
    def activation_dtype(self) -> str | None:
        """The checkpoint's unquantized dtype: that of the activations, and of a KV cache nobody pinned."""
        return normalize_dtype(getattr(self.config, "dtype", None) or getattr(self.config, "torch_dtype", None))

    @property
    def weight_dtype(self) -> str | None:
        """How the weights are stored: fp8 for an FP8 checkpoint, else the checkpoint's dtype."""
        return self.quantization or self.activation_dtype

    @property
    def kv_cache_dtype(self) -> str | None:
        """The KV-cache dtype the deployment pins (manifest or checkpoint), else the activations' dtype."""
        if self.manifest and self.manifest.get("kv_cache_dtype"):
            return normalize_dtype(self.manifest["kv_cache_dtype"])
        quant = getattr(self.config, "quantization_config", None)
        quant = quant if isinstance(quant, dict) else {}
        scheme = quant.get("kv_cache_scheme") or {}  # ModelOpt's newer export: {"num_bits": 8, "type": "float"}
        fp8_scheme = scheme.get("num_bits") == 8 and scheme.get("type") == "float"
        return ("fp8" if fp8_scheme else normalize_dtype(quant.get("kv_cache_quant_algo"))) or self.activation_dtype

    def arch(self) -> dict:
        return arch_summary(self.config)


def arch_summary(config) -> dict:
    """Dims, parameter counts (meta device, no weights) and positions: all `bench.ideal` needs."""
    plain = type(config).from_dict({k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    return {**asdict(Dims.of(config)), **count_params(plain),
            "max_position_embeddings": getattr(config, "max_position_embeddings", None)}


def _read_config(folder: Path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    check_supported(config)
    return config


def _is_deploy(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def _deploy_target(model: str, folder: Path, label: str) -> Target:
    manifest = json.loads((folder / "manifest.json").read_text())
    checkpoint = folder / "checkpoint"
    if not (checkpoint / "config.json").is_file():
        raise MissingInput(f"{folder} has a manifest.json but no checkpoint/config.json; it is not a complete "
                                "deployment folder: rerun `minitron deploy` into a new --out")
    return Target(model, label, "deploy", checkpoint, _read_config(checkpoint), manifest=manifest)


def resolve(backend: str, model: str, label: str | None = None, tokenizer: str | None = None) -> Target:
    """Check that `model` is the right kind of thing for `backend`; raise naming what is expected otherwise."""
    if backend not in BACKENDS:
        raise BadInput(f"--backend {backend!r} is unknown; choose from {', '.join(BACKENDS)}")
    if backend == "openai":
        if not model.startswith(("http://", "https://")):
            raise BadInput(f"--backend openai takes a server URL such as http://localhost:8000/v1, not {model!r}; "
                             "start a server with `trtllm-serve DIR/checkpoint` or `vllm serve DIR` first")
        if not tokenizer:
            raise BadInput("--backend openai needs --tokenizer: the served checkpoint's folder (or its deployment "
                             "folder), for the prompts' vocabulary and the model's architecture")
        served = resolve("vllm", tokenizer, label)
        return Target(model, served.label, "url", served.checkpoint, served.config, manifest=served.manifest,
                      url=model.rstrip("/"))
    from minitron.core.gguf import is_gguf, local_model

    name = label or Path(model).name.removesuffix(".gguf")
    folder = Path(local_model(model) if backend == "hf" and is_gguf(model) else model)
    if not folder.is_dir():
        raise MissingInput(f"--model {model}: no such folder; pass a local checkpoint or deployment folder "
                                "(or a .gguf file for --backend hf)")
    if backend == "trtllm":
        if not _is_deploy(folder):
            raise BadInput(f"--backend trtllm takes a deployment folder (checkpoint/, manifest.json, "
                             f"extra_llm_api_options.yaml), and {folder} has no manifest.json; "
                             + DEPLOY_HINT.format(backend="trtllm"))
        return _deploy_target(model, folder, name)
    if _is_deploy(folder):
        if backend == "hf":
            raise BadInput(f"{folder} is a deployment folder; benchmark it with --backend trtllm or vllm "
                             f"(or pass {folder / 'checkpoint'} to --backend hf if it is not quantized)")
        return _deploy_target(model, folder, name)
    if not (folder / "config.json").is_file():
        raise MissingInput(f"{folder} is neither an HF checkpoint (no config.json) nor a deployment folder "
                                "(no manifest.json); pass the folder that holds config.json and the weights")
    target = Target(model, name, "checkpoint", folder, _read_config(folder))
    if backend == "hf" and target.quantization:
        raise BadInput(f"{folder} is an {target.quantization.upper()} checkpoint, which transformers cannot run "
                         "faithfully (it drops the scales); benchmark it with --backend trtllm or vllm")
    return target
