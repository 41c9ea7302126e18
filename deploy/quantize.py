"""FP8 checkpoints with NVIDIA ModelOpt, and what FP8 costs in accuracy, measured before anything is served.

    minitron quantize --model DIR --calib DATA --out DIR-fp8 [--kv-cache fp8] [--num-samples 512]
    minitron quantize --model work/tiny/distilled --calib work/tiny/embedded/prose.jsonl --out work/width-fp8 \
        --seq-len 256 --num-samples 32                                             # CPU smoke settings

Per-tensor E4M3 weights and activations (`mtq.FP8_DEFAULT_CFG`), optionally an FP8 KV cache, calibrated
on a sample of the distillation data, exported as ModelOpt's unified HF checkpoint (`hf_quant_config.json`,
float8_e4m3fn weights with fp32 scales) that TensorRT-LLM and vLLM load directly. transformers cannot load
that export (it drops the scales), so accuracy is measured here, on the in-memory fake-quantized model
against the unquantized one: LM loss and token-level KL on held-out blocks, and optionally an eval suite.
The export itself is checked too: every dequantised weight (fp8 x scale) must lie within FP8's rounding bound
of the original. ModelOpt takes ~15 s to import, so it is imported here only, when quantizing.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from minitron.core.errors import BadInput
from minitron.core.measure import forward_kl, lm_loss

log = logging.getLogger(__name__)

E4M3_RELATIVE_ERROR = 2.0**-4  # 3 mantissa bits, round to nearest: half an ulp of a normal number
E4M3_SUBNORMAL_ERROR = 2.0**-10  # half the smallest subnormal (2^-9), in units of the scale
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def fp8_config(kv_cache_fp8: bool) -> dict:
    """ModelOpt's FP8 recipe, plus the KV-cache quantizers when asked (their format changed from a dict to a
    list of rules in ModelOpt 0.4x; both are handled)."""
    import modelopt.torch.quantization as mtq

    cfg = copy.deepcopy(mtq.FP8_DEFAULT_CFG)
    if kv_cache_fp8:
        extra = copy.deepcopy(mtq.FP8_KV_CFG["quant_cfg"])
        if isinstance(cfg["quant_cfg"], list):
            cfg["quant_cfg"] = cfg["quant_cfg"] + list(extra)
        else:
            cfg["quant_cfg"].update(extra)
    return cfg


def fake_quantize(model, calib_batches: list[torch.Tensor], kv_cache_fp8: bool = False):
    """Calibrate and fake-quantize `model` in place with ModelOpt's FP8 recipe (E4M3 rounding simulated in
    the model's dtype): what `quantize` exports, and what an eval of "the FP8 model" runs on a CPU."""
    import modelopt.torch.quantization as mtq

    device = next(model.parameters()).device

    def forward_loop(m):
        with torch.no_grad():
            for ids in calib_batches:
                m(input_ids=ids.to(device))

    return mtq.quantize(model, fp8_config(kv_cache_fp8), forward_loop=forward_loop)


@torch.no_grad()
def token_kl(reference, quantized, batches: list[torch.Tensor]) -> float:
    """Mean over tokens of KL(p_reference || p_quantized)."""

    device = next(reference.parameters()).device
    total = count = 0
    for ids in batches:
        ids = ids.to(device)
        kl = forward_kl(quantized(input_ids=ids).logits, reference(input_ids=ids).logits)
        total += kl.item() * ids.numel()
        count += ids.numel()
    return total / count


def check_export(folder: Path, reference) -> dict:
    """Dequantise every FP8 weight of the export and compare it with the unquantized model's weight."""
    from minitron.compress.experts import checkpoint_weight
    from safetensors.torch import load_file

    worst, checked = 0.0, 0
    for shard in sorted(folder.glob("*.safetensors")):
        tensors = load_file(shard)
        for name, weight in tensors.items():
            if weight.dtype != torch.float8_e4m3fn:
                continue
            scale = tensors.get(name.removesuffix("weight") + "weight_scale")
            if scale is None:
                raise RuntimeError(f"the export has no weight_scale for {name}")
            try:
                original = reference.get_parameter(name)
            except AttributeError:  # per-expert names, where transformers 5 holds the experts fused
                original = checkpoint_weight(reference, name)
            # ModelOpt divides by the scale in the weight's own dtype: one more rounding of that dtype
            relative = E4M3_RELATIVE_ERROR + torch.finfo(original.dtype).eps / 2
            original = original.float()
            error = (weight.float() * scale.float() - original).abs()
            bound = original.abs() * relative + scale.float() * E4M3_SUBNORMAL_ERROR  # normals + subnormals
            worst = max(worst, (error / (bound * (1 + 1e-6) + 1e-30)).max().item())
            checked += 1
    if checked == 0:
        raise RuntimeError(f"the export in {folder} holds no float8 weights")
    if worst > 1.0:
        raise RuntimeError(f"exported FP8 weights exceed the FP8 rounding bound ({worst:.3f}x of it)")
    return {"fp8_tensors_checked": checked, "max_error_over_fp8_bound": worst}


def quantize(model_dir: str, calib: str, out: str | Path, kv_cache: str = "auto", num_samples: int = 512,
             seq_len: int | None = None, batch_size: int = 8, dtype: str = "bfloat16", eval_blocks: int = 64,
             compare_models: Callable | None = None, device: str = "cpu", seed: int = 0, overwrite: bool = False
             ) -> dict:
    """Calibrate, fake-quantize, measure, export. Returns the record written to `out/minitron.json`.

    `compare_models(reference, fp8, tokenizer) -> dict` adds a comparison of the two in-memory models to the
    record's accuracy (an eval suite: `minitron.evals.scorers.suite_comparison`); the fake-quantized model exists
    only here, before export, and the exported FP8 checkpoint needs a GPU engine to run."""
    from minitron.compress.data import load_blocks
    from minitron.core.families import check_supported, engine_caveat
    from minitron.core.gguf import local_model
    from minitron.core.model_io import load_config, load_model, save_tokenizer
    from minitron.core.records import check_output_dir, output_dir, write_record
    from transformers import AutoTokenizer

    if kv_cache not in ("auto", "fp8"):
        raise BadInput(f"--kv-cache must be auto (the model's dtype) or fp8, not {kv_cache!r}")
    if dtype not in DTYPES:
        raise BadInput(f"--dtype must be one of {', '.join(DTYPES)}")
    check_output_dir(out, overwrite, reads=(model_dir, calib))
    model_dir = local_model(model_dir)
    config = load_config(model_dir)  # refuses unsupported and already-quantized checkpoints
    caveat = engine_caveat(check_supported(config), "modelopt")
    if caveat:
        log.warning(caveat)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    seq_len = seq_len or min(512, config.max_position_embeddings)
    if seq_len > config.max_position_embeddings:
        raise BadInput(f"--seq-len {seq_len} exceeds the model's {config.max_position_embeddings} positions")
    splits = load_blocks(calib, tokenizer, seq_len, seed=seed)  # calibration data fails here, before ModelOpt
    calib_batches = list(splits.calibration.take(num_samples).batches(batch_size))
    held_out = list(splits.val.take(eval_blocks).batches(batch_size))

    log.info("importing ModelOpt (about 15 s)")
    started = time.perf_counter()
    from modelopt.torch.export import export_hf_checkpoint

    model, _ = load_model(model_dir, dtype=DTYPES[dtype], device=device)
    reference = copy.deepcopy(model)
    fake_quantize(model, calib_batches, kv_cache_fp8=kv_cache == "fp8")
    accuracy = {"held_out_blocks": sum(len(b) for b in held_out), "seq_len": seq_len}
    if held_out:
        accuracy["lm_loss_reference"] = lm_loss(reference, held_out)
        accuracy["lm_loss_fp8"] = lm_loss(model, held_out)
        accuracy["lm_loss_delta"] = accuracy["lm_loss_fp8"] - accuracy["lm_loss_reference"]
        accuracy["token_kl"] = token_kl(reference, model, held_out)
    if compare_models is not None:
        accuracy["eval"] = compare_models(reference, model, tokenizer)
    with output_dir(out, overwrite) as tmp:
        model.config.architectures = [type(model).__name__]  # ModelOpt's export needs it set
        export_hf_checkpoint(model, export_dir=tmp)
        save_tokenizer(tokenizer, tmp)
        export = check_export(tmp, reference)
        record = write_record(tmp, "quantize", seed=seed, source=str(model_dir), calib=calib,
                              quantization="fp8", kv_cache_dtype="fp8" if kv_cache == "fp8" else dtype,
                              dtype=dtype, calibration={"num_samples": sum(len(b) for b in calib_batches),
                                                        "seq_len": seq_len},
                              accuracy=accuracy, export_check=export,
                              modelopt=__import__("modelopt").__version__, engine_caveat=caveat,
                              seconds=round(time.perf_counter() - started, 1))
    log.info("FP8 checkpoint in %s: LM loss %s -> %s, token KL %s, export within %.2fx of the FP8 bound",
             out, _fmt(accuracy.get("lm_loss_reference")), _fmt(accuracy.get("lm_loss_fp8")),
             _fmt(accuracy.get("token_kl")), export["max_error_over_fp8_bound"])
    return record


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
