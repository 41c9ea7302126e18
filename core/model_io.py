"""Hugging Face checkpoints in and out: validated loading, saving readable by transformers 4.57 and 5.x, and
models built on the meta device from tensors (what pruning produces), without a copy or a random init.

    model, tokenizer = load_model("work/smollm2/teacher")
    save_checkpoint(model, tokenizer, folder)          # inside `minitron.core.records.output_dir`

A `.gguf` file goes through `minitron.core.gguf.local_model` first.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from minitron.core.errors import BadInput, MissingInput
from minitron.core.families import check_supported

log = logging.getLogger(__name__)

def read_config(path: str | os.PathLike):
    """A local config.json (the file, or the folder that holds it) as a transformers config; a file that is not
    one is refused, naming it."""
    from transformers import AutoConfig

    file = Path(path).expanduser()
    file = file / "config.json" if file.is_dir() else file
    if not file.is_file():
        raise MissingInput(f"{path} is not a Hugging Face checkpoint folder or config file (no config.json); "
                           "pass the folder that holds config.json and the weights, or the config.json itself")
    try:
        return AutoConfig.from_pretrained(file)
    except (OSError, ValueError, KeyError, TypeError) as err:
        reason = str(err).splitlines()[0]
        raise BadInput(f"{file} is not a model config transformers can read ({reason}); restore the "
                       "checkpoint's own config.json") from None


def check_weights(path: str | os.PathLike, config) -> None:
    """Every safetensors file of a local checkpoint is whole and each tensor has the shape `config` gives it:
    checked from the files' headers, before any weight is read."""
    from safetensors import SafetensorError, safe_open
    from transformers import AutoModelForCausalLM

    files = sorted(Path(path).glob("*.safetensors"))
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in AutoModelForCausalLM.from_config(config).state_dict().items()}
    for file in files:
        try:
            with safe_open(file, "pt") as weights:
                for name in weights.keys():
                    shape = tuple(weights.get_slice(name).get_shape())
                    if name in expected and expected[name] != shape:
                        raise BadInput(f"{file}: {name} has shape {list(shape)} but config.json gives "
                                       f"{list(expected[name])}; the weights and config.json are from different "
                                       "models: restore the matching pair")
        except SafetensorError as err:
            raise BadInput(f"{file} is not a whole safetensors file ({err}); it may have been cut short in a copy "
                           "or a download: restore it") from None


def load_config(path: str | os.PathLike):
    """The config of a checkpoint (a local folder or a hub id), validated before any weight is read; a local
    folder's weight files are checked against it from their headers (`check_weights`)."""
    from transformers import AutoConfig

    local = Path(path).exists() or str(path).startswith((".", "/", "~"))
    if local:
        config = read_config(Path(path) if Path(path).is_dir() else Path(path, "config.json"))
    else:  # a hub id such as meta-llama/Llama-3.1-8B
        try:
            config = AutoConfig.from_pretrained(path)
        except OSError as err:
            raise MissingInput(f"{path} is neither a local folder nor a reachable hub model ({err}); "
                                    "download it where the hub is reachable and pass the local folder") from None
    check_supported(config)
    if getattr(config, "quantization_config", None):
        raise BadInput(f"{path} is a quantized checkpoint ({config.quantization_config.get('quant_method')}); "
                         "prune and distill the BF16/FP32 model, quantize last")
    if local:
        check_weights(path, config)
    return config


def load_model(path: str | os.PathLike, dtype: str | torch.dtype = "auto", device: str = "cpu"):
    """Load a supported causal LM and its tokenizer from a local folder, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = load_config(path)
    model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def save_checkpoint(model, tokenizer, folder: str | os.PathLike) -> None:
    """A standard HF checkpoint: safetensors weights, config with `architectures`, tokenizer."""
    from safetensors import SafetensorError

    model.config.architectures = [type(model).__name__]
    try:
        model.save_pretrained(folder, safe_serialization=True)
    except SafetensorError as err:  # its I/O errors end in "(os error N)": an OSError, so the CLI names the cause
        code = re.search(r"\(os error (\d+)\)", str(err))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(folder)) from err
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
