"""FLOPs and bytes moved per generated token of an architecture, from its dims and parameter counts alone:
what `bench` compares measured speedups with, and what `minitron search` budgets latency by.

    cost = token_cost(arch, isl=2048, osl=128, batch=32, weight_dtype="fp8", kv_dtype="fp8")

A generated token's cost is averaged over one request's life: its share of the prefill (ISL prompt tokens in
one pass, the first output token's logits) and OSL-1 decode steps, each attending to a context that grows
from ISL+1 to ISL+OSL-1 tokens.

- FLOPs (per request, independent of the batch): 2 per weight of the decoder for every token it processes,
  2 x hidden x vocab for each token whose logits are computed (the last prompt token and every decode step,
  as engines do), and 4 x layers x heads x head_dim x context for attention (QK^T and PV, 2 FLOPs per
  multiply-accumulate each).
- Bytes (what limits decoding on a GPU): every forward pass of a batch reads all weights once, so a request's
  share is weights / batch per step; each sequence reads its own KV cache, 2 x layers x kv_heads x head_dim x
  dtype bytes per token of context, every step, and the prefill writes it. Decoder weights are counted at the
  deployed dtype (FP8 1 byte, BF16 2, FP32 4); the lm_head at the activations' dtype when the weights are
  quantized, since ModelOpt leaves it unquantized. Activations are ignored (small next to both at batch <= 64).

With experts, a token's FLOPs run through the active parameters only; a decode step of a batch still reads
every expert's weights (a batch of tokens routes to nearly all of them), so bytes count all parameters.
"""

from __future__ import annotations

from minitron.core.arch import dtype_bytes, kv_bytes_per_token
from minitron.core.errors import BadInput


def token_cost(arch: dict, isl: int, osl: int, batch: int, weight_dtype: str | None,
               kv_dtype: str | None = None) -> dict[str, float]:
    """FLOPs and bytes moved per generated token, averaged over prefill and decode (see the module docstring).
    `kv_dtype` None means the KV cache is kept in the activations' dtype."""
    if min(isl, osl, batch) < 1:
        raise BadInput(f"ISL, OSL and batch must be positive, got {isl}, {osl}, {batch}")
    w_bytes = dtype_bytes(weight_dtype, "weight")
    act_bytes = 2.0 if weight_dtype in ("fp8", "int8", "nvfp4") else w_bytes
    kv_bytes = act_bytes if kv_dtype is None else dtype_bytes(kv_dtype, "KV-cache")
    decoder, head = arch["non_embedding_params"], arch["hidden"] * arch["vocab"]
    active = decoder - (arch["params"] - arch["active_params"] if "active_params" in arch else 0)  # experts skipped
    attn_flops_per_key = 4 * arch["layers"] * arch["heads"] * arch["head_dim"]
    kv_per_token = kv_bytes_per_token(arch["layers"], arch["kv_heads"], arch["head_dim"], kv_bytes)
    steps = osl - 1  # decode steps; the first output token comes out of the prefill
    keys_prefill = isl * (isl + 1) / 2  # causal: prompt token i attends to i keys
    keys_decode = steps * isl + steps * (steps + 1) / 2  # step j attends to isl + j keys
    flops = (2 * active * (isl + steps) + 2 * head * osl + attn_flops_per_key * (keys_prefill + keys_decode))
    weights = decoder * w_bytes + head * act_bytes
    moved = weights / batch * (1 + steps) + kv_per_token * (isl + keys_decode)
    return {"flops": flops / osl, "bytes": moved / osl}
