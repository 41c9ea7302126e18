"""Width pruning: trim hidden channels, MLP neurons, attention heads and KV groups by importance.

    minitron prune width --model DIR --calib DATA --out DIR --hidden-size 3072 --ffn-hidden-size 9216

Every axis given a target is ranked by its importance and its weight matrices are cut directly: the
embedding and lm_head columns, every projection's rows or columns (and biases), the norms. Kept units
are placed in importance order, as Minitron does; an axis without a target keeps its original order.

Hidden channels and RMSNorm: the RMS over h kept channels is sqrt(H/h) times the RMS over all H channels
of the masked model (where the removed channels are zero). Folding that factor into the norm weights
(`rescale_norms`, default on) makes the pruned model compute exactly what the teacher computes with those
channels masked, which is the starting point the importance ranking assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from minitron.compress.importance import Importance
from minitron.core.arch import Dims, WidthTarget, check_supported, derive_config
from minitron.core.errors import BadInput
from minitron.core.model_io import build_model

# For each projection: which axis its rows (output) and columns (input) index.
PROJECTION_AXES = {
    "q_proj": ("q", "hidden"), "k_proj": ("kv", "hidden"), "v_proj": ("kv", "hidden"), "o_proj": ("hidden", "q"),
    "gate_proj": ("ffn", "hidden"), "up_proj": ("ffn", "hidden"), "down_proj": ("hidden", "ffn"),
}
NORMS = ("input_layernorm", "post_attention_layernorm")


@dataclass
class WidthPlan:
    """Indices to keep, in their new order: hidden [h]; per layer ffn [f], query heads [n'], KV heads [kv']."""

    dims: Dims
    hidden: torch.Tensor
    ffn: list[torch.Tensor]
    q_heads: list[torch.Tensor]
    kv_heads: list[torch.Tensor]
    norm_scale: float = 1.0


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort(scores, descending=True, stable=True)[:k]


def plan_width(importance: Importance, src: Dims, target: WidthTarget, rescale_norms: bool = True) -> WidthPlan:
    """Rank every targeted axis; heads are ranked within their KV group, groups by the L2 of their heads."""
    dst = target.resolve(src)
    importance.check_matches(src)
    identity = torch.arange

    hidden = _top(importance.hidden, dst.hidden) if target.hidden_size else identity(src.hidden)
    ffn = [_top(s, dst.ffn) if target.intermediate_size else identity(src.ffn) for s in importance.ffn]
    heads_targeted = target.num_attention_heads or target.num_key_value_heads
    q_heads, kv_heads = [], []
    for scores in importance.heads:
        if not heads_targeted:
            q_heads.append(identity(src.heads))
            kv_heads.append(identity(src.kv_heads))
            continue
        by_group = scores.view(src.kv_heads, src.group_size)
        groups = _top(by_group.norm(dim=1), dst.kv_heads)
        per_group = dst.heads // dst.kv_heads
        q_heads.append(torch.cat([g * src.group_size + _top(by_group[g], per_group) for g in groups]))
        kv_heads.append(groups)
    scale = math.sqrt(src.hidden / dst.hidden) if rescale_norms else 1.0
    return WidthPlan(dims=dst, hidden=hidden, ffn=ffn, q_heads=q_heads, kv_heads=kv_heads, norm_scale=scale)


def _channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Head indices -> the rows/columns of their head_dim channels."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()


def _trim(name: str, tensor: torch.Tensor, plan: WidthPlan) -> torch.Tensor:
    """The trimmed copy of one named parameter."""
    parts = name.split(".")
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return tensor.index_select(1, plan.hidden)
    if name == "model.norm.weight" or (len(parts) > 3 and parts[3] in NORMS):
        return tensor.index_select(0, plan.hidden) * plan.norm_scale
    if parts[:2] == ["model", "layers"] and parts[4] in PROJECTION_AXES:
        layer = int(parts[2])
        axes = {"hidden": plan.hidden, "ffn": plan.ffn[layer],
                "q": _channels(plan.q_heads[layer], plan.dims.head_dim),
                "kv": _channels(plan.kv_heads[layer], plan.dims.head_dim)}
        rows, cols = PROJECTION_AXES[parts[4]]
        out = tensor.index_select(0, axes[rows])
        return out.index_select(1, axes[cols]) if parts[-1] == "weight" else out
    raise BadInput(f"cannot width-prune parameter {name!r}: it is not part of a supported decoder layout")


@torch.no_grad()
def apply_width(model, plan: WidthPlan):
    """Return the pruned model. `model` is consumed: each weight is released once trimmed, so the peak
    memory stays near one copy of the teacher instead of teacher plus student."""
    check_supported(model.config)
    tensors = {}
    for name, param in list(model.named_parameters()):
        tensors[name] = _trim(name, param, plan).contiguous()
        param.data = torch.empty(0, dtype=param.dtype)  # drop the teacher's copy now
    if plan.dims.tied:
        tensors.pop("lm_head.weight", None)
    return build_model(derive_config(model.config, dims=plan.dims), tensors, like=model)


def prune_width(model, importance: Importance, target: WidthTarget, rescale_norms: bool = True):
    """Rank by `importance`, trim `model` (consumed) to `target`, and return the pruned model."""
    plan = plan_width(importance, Dims.of(model.config), target, rescale_norms=rescale_norms)
    return apply_width(model, plan)
