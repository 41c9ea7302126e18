"""Hugging Face checkpoints in and out: validated loading, atomic writing, and provenance records.

Every stage of the toolkit writes its output folder through `output_dir`: the folder is built under a
temporary name beside the target and renamed only when complete, so an interrupted run never leaves
a half-written checkpoint that a later stage could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from compress.arch import check_supported
from compress.precision import cpu_has_native_bf16

log = logging.getLogger(__name__)

RECORD_NAME = "minitron.json"


def load_config(path: str | os.PathLike):
    """The config of a local checkpoint folder, validated before any weight is read."""
    from transformers import AutoConfig

    if Path(path).exists() or str(path).startswith((".", "/", "~")):
        if not Path(path, "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint folder (no config.json); "
                                    "pass the folder that holds config.json and the weights")
        config = AutoConfig.from_pretrained(path)
    else:  # a hub id such as meta-llama/Llama-3.1-8B
        try:
            config = AutoConfig.from_pretrained(path)
        except OSError as err:
            raise FileNotFoundError(f"{path} is neither a local folder nor a reachable hub model ({err}); "
                                    "download it where the hub is reachable and pass the local folder") from None
    check_supported(config)
    if getattr(config, "quantization_config", None):
        raise ValueError(f"{path} is a quantized checkpoint ({config.quantization_config.get('quant_method')}); "
                         "prune and distill the BF16/FP32 model, quantize last")
    return config


def load_model(path: str | os.PathLike, dtype: str | torch.dtype = "auto", device: str = "cpu"):
    """Load a supported causal LM and its tokenizer from a local folder, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = load_config(path)
    model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def check_output_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """Fail before any heavy work when `out` exists and `overwrite` is not set."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    return out


@contextlib.contextmanager
def output_dir(out: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary folder beside `out`; on success it replaces `out`, on error it is removed."""
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(trash)
        tmp.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(out)


def save_checkpoint(model, tokenizer, folder: str | os.PathLike) -> None:
    """A standard HF checkpoint: safetensors weights, config with `architectures`, tokenizer."""
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder)


def save_tokenizer(tokenizer, folder: str | os.PathLike) -> None:
    """`tokenizer.save_pretrained`, readable by transformers 4.57 too: 5.x names its fast tokenizers'
    class `TokenizersBackend`, which 4.57 (TensorRT-LLM's pin) does not know; `PreTrainedTokenizerFast` reads
    the same tokenizer.json in both."""
    tokenizer.save_pretrained(folder)
    config_path = Path(folder, "tokenizer_config.json")
    config = json.loads(config_path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def provenance(seed: int | None = None) -> dict:
    """Where a result came from: git sha, library versions, hardware, seed, time."""
    import transformers

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {
        "git_sha": sha,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "libraries": _versions(LIBRARIES),
        "hardware": {"cpu": _cpu_model(), "cpu_flags": _cpu_flags(), "cpu_count": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(),
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "seed": seed,
        "command": " ".join(sys.argv),
    }


LIBRARIES = ("numpy", "tokenizers", "safetensors", "accelerate", "lm_eval", "nvidia-modelopt", "gguf")
"""Besides torch and transformers, the installed packages whose versions can change a number."""
NUMERIC_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
"""The instruction sets that decide which kernels torch runs, and so the order of a float sum."""


def _versions(names: tuple[str, ...]) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in NUMERIC_CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def _cpu_model() -> str:
    """The CPU's model name where the kernel tells it (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_record(folder: str | os.PathLike, stage: str, seed: int | None = None, **fields) -> dict:
    """Write the stage's self-description (`minitron.json`): what ran, on what, with which settings."""
    record = {"stage": stage, **fields, "provenance": provenance(seed)}
    Path(folder, RECORD_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def build_model(config, tensors: dict[str, torch.Tensor], like):
    """A causal LM of `config` that adopts `tensors` as its weights, without copying or random init.

    Built on the meta device and filled with `load_state_dict(assign=True)`; the non-persistent buffers
    (rotary frequencies, which pruning never changes) are taken from `like`, the model they came from.
    """
    from transformers import AutoModelForCausalLM

    dtype = next(iter(tensors.values())).dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    tied_head = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied_head:
        raise RuntimeError(f"weights do not fit the derived config: missing {missing}, unexpected {unexpected}")
    if tied_head:
        model.lm_head.weight = model.get_input_embeddings().weight
    donors = dict(like.named_buffers())
    for name, buf in model.named_buffers():
        if buf.is_meta:
            donor = donors.get(name)
            if donor is None or donor.shape != buf.shape:
                raise RuntimeError(f"cannot restore buffer {name}: the source model has no buffer of that shape")
            module, _, attr = name.rpartition(".")
            model.get_submodule(module)._buffers[attr] = donor
    model.generation_config = like.generation_config
    return model.eval()
