"""GPU check of the FP8 path: quantize a small model on the GPU with ModelOpt, run the exported FP8 weights
through real FP8 GEMMs (`torch._scaled_mm`), and compare with the fake-quantized model's logits.

    python -m minitron.deploy.gpu_check --out gpu-check.json                      # a random 4-layer Llama
    python -m minitron.deploy.gpu_check --model work/embedded/teacher --out gpu-check.json
The comparison itself (`compare_fp8`) also runs on the CPU, where torch has FP8 `_scaled_mm` too; the tests
use that, and only the timing needs the GPU.

Needs an NVIDIA GPU with FP8 tensor cores (compute capability >= 8.9: L4, L40, H100, H200). On a machine
without network, install the project and ModelOpt from local wheels first: `bash scripts/gpu-check.sh run`.
Prints and writes: logit differences and KL between real FP8 and fake quantization (they should agree to
within bf16 rounding), both against BF16, and the forward time of FP8 GEMMs vs BF16 at one batch.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

FP8_MAX = 448.0


class ScaledMMLinear(torch.nn.Module):
    """A Linear layer from a ModelOpt FP8 export: per-tensor static input scale, per-tensor weight scale."""

    def __init__(self, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, input_scale: torch.Tensor, bias=None):
        super().__init__()
        self.weight_t = weight_fp8.t()  # [in, out], column-major as _scaled_mm wants its second operand
        self.weight_scale, self.input_scale, self.bias = weight_scale.float(), input_scale.float(), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x_fp8 = (x.reshape(-1, shape[-1]).float() / self.input_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(x_fp8, self.weight_t, scale_a=self.input_scale, scale_b=self.weight_scale,
                             out_dtype=torch.bfloat16)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], y.shape[-1])


def real_fp8_model(export_dir: Path, like, device="cuda"):
    """`like` (a BF16 copy of the model) with every exported FP8 Linear replaced by a ScaledMMLinear."""
    from safetensors.torch import load_file

    tensors = {}
    for shard in export_dir.glob("*.safetensors"):
        tensors.update(load_file(shard, device=str(device)))
    model = copy.deepcopy(like)
    replaced = 0
    for name, module in list(model.named_modules()):
        weight = tensors.get(f"{name}.weight")
        if isinstance(module, torch.nn.Linear) and weight is not None and weight.dtype == torch.float8_e4m3fn:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child,
                    ScaledMMLinear(weight, tensors[f"{name}.weight_scale"], tensors[f"{name}.input_scale"],
                                   module.bias))
            replaced += 1
    return model, replaced


def timed(model, ids, repeats: int = 10) -> float:
    with torch.no_grad():
        model(input_ids=ids)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(input_ids=ids)
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def compare_fp8(model, ids: torch.Tensor, calib: list[torch.Tensor]) -> dict:
    """Quantize `model` (consumed) with ModelOpt, export it, rebuild it with real FP8 GEMMs, compare logits."""
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint

    reference = copy.deepcopy(model)

    def forward_loop(m):
        with torch.no_grad():
            for batch in calib:
                m(input_ids=batch)

    mtq.quantize(model, mtq.FP8_DEFAULT_CFG, forward_loop=forward_loop)
    # Each layer on its own: the fake-quantized layer's input and output, to feed the real FP8 layer the same
    # input. A whole random model amplifies rounding differences layer after layer; one layer shows the GEMM.
    layer_io, hooks = {}, []

    def keep(name):
        def hook(_module, args, out):
            layer_io.setdefault(name, (args[0].detach(), out.detach()))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
            hooks.append(module.register_forward_hook(keep(name)))
    with torch.no_grad():  # before the export, which turns the fake-quantized weights into FP8 in place
        logits = {name: m(input_ids=ids).logits.float() for name, m in (("bf16", reference), ("fake_quant", model))}
    for hook in hooks:
        hook.remove()
    with tempfile.TemporaryDirectory() as export_dir:
        model.config.architectures = [type(model).__name__]
        export_hf_checkpoint(model, export_dir=export_dir)
        fp8, replaced = real_fp8_model(Path(export_dir), reference, device=ids.device)
    with torch.no_grad():
        logits["real_fp8"] = fp8(input_ids=ids).logits.float()
        # mean |real - fake| / mean |fake|: element-wise maxima would count the few elements where the fake
        # quantizer (dividing by the scale in bf16) and the real one (in fp32) round to neighbouring FP8 values
        def rel(a, b):
            return ((a.float() - b.float()).abs().mean() / b.float().abs().mean()).item()

        fp8_layers = [name for name in layer_io if isinstance(fp8.get_submodule(name), ScaledMMLinear)]
        per_layer = [rel(fp8.get_submodule(n)(layer_io[n][0]), layer_io[n][1]) for n in fp8_layers]
        # the size of FP8's own error on the same inputs, for scale: the BF16 layer against the fake-quantized one
        quant_error = [rel(reference.get_submodule(n)(layer_io[n][0]), layer_io[n][1]) for n in fp8_layers]

    def kl(p_logits, q_logits):  # mean over tokens of KL(p || q)
        return F.kl_div(F.log_softmax(q_logits, -1).flatten(0, 1), F.log_softmax(p_logits, -1).flatten(0, 1),
                        log_target=True, reduction="batchmean").item()

    figures = {
        "fp8_linears": replaced,
        "per_layer_rel_diff_real_vs_fake": max(per_layer),
        "per_layer_rel_diff_bf16_vs_fake": min(quant_error),
        "real_vs_fake_max_abs_logit_diff": (logits["real_fp8"] - logits["fake_quant"]).abs().max().item(),
        "real_vs_fake_token_kl": kl(logits["fake_quant"], logits["real_fp8"]),
        "fake_vs_bf16_token_kl": kl(logits["bf16"], logits["fake_quant"]),
        "real_vs_bf16_token_kl": kl(logits["bf16"], logits["real_fp8"]),
        "top1_agreement_real_vs_fake": (logits["real_fp8"].argmax(-1) == logits["fake_quant"].argmax(-1)).float().mean().item(),
    }
    if ids.device.type == "cuda":
        figures["forward_s_bf16"], figures["forward_s_real_fp8"] = timed(reference, ids), timed(fp8, ids)
        figures["fp8_speedup_over_bf16"] = figures["forward_s_bf16"] / figures["forward_s_real_fp8"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="A checkpoint folder; default: a random 4-layer Llama (hidden 1024).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        raise SystemExit("this check needs an NVIDIA GPU with FP8 support (compute capability >= 8.9)")
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16)
    else:
        config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=16,
                             num_key_value_heads=4, head_dim=64, vocab_size=8192, architectures=["LlamaForCausalLM"])
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model = model.cuda().eval()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), device="cuda")
    calib = [torch.randint(0, vocab, (8, args.seq_len), device="cuda") for _ in range(8)]
    figures = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "batch": [args.batch_size, args.seq_len], **compare_fp8(model, ids, calib)}
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:36s} {value}")


if __name__ == "__main__":
    main()
