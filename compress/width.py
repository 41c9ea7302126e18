"""Width pruning: trim hidden channels, MLP neurons, attention heads and KV groups by importance.

    minitron prune width --model DIR --calib DATA --out DIR --hidden-size 3072 --ffn-hidden-size 9216

Every axis given a target is ranked by its importance and its weight matrices are cut directly: the
embedding and lm_head columns, every projection's rows or columns (and biases), the norms. Kept units
are placed in importance order, as Minitron does; an axis without a target keeps its original order.

Which rows and columns belong to which axis comes from the family's entry in `core.families` (fused
projections included), so every supported family goes through the same code; experts and their neurons are cut
by `compress.experts`.

Hidden channels and norms: the RMS over h kept channels is sqrt(H/h) times the RMS over all H channels
of the masked model (where the removed channels are zero). Folding that factor into what the norms multiply
by (`rescale_norms`, default on; w for Llama, 1 + w for Gemma) makes the pruned model compute exactly what the
teacher computes with those channels masked, which is the starting point the importance ranking assumed.
Gemma also multiplies its embeddings by sqrt(hidden_size); the embeddings take sqrt(H/h) so the residual
stream is unchanged, and with tied embeddings the final norm gives it back. A LayerNorm (Nemotron) also
subtracts the mean over the channels it sees, which differs between h and H channels whenever the mean is
not zero: there hidden-channel pruning is close to masking, not equal (7% of the logits' norm on a random
tiny model, tests/compress/test_width.py); heads and neurons stay exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from minitron.compress import experts as moe
from minitron.compress.importance import Importance
from minitron.core.arch import Dims, WidthTarget, derive_config
from minitron.core.errors import BadInput
from minitron.core.families import Family, check_supported
from minitron.core.model_io import build_model


@dataclass
class WidthPlan:
    """Indices to keep, in their new order: hidden [h]; per layer ffn [f] (with experts, one [f] per source
    expert), query heads [n'], KV heads [kv'], and experts [e'] (mixture-of-experts models)."""

    source: Dims
    dims: Dims
    hidden: torch.Tensor
    ffn: list[torch.Tensor]
    q_heads: list[torch.Tensor]
    kv_heads: list[torch.Tensor]
    experts: list[torch.Tensor] | None = None
    norm_scale: float = 1.0


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort(scores, descending=True, stable=True)[:k]


def plan_width(importance: Importance, src: Dims, target: WidthTarget, rescale_norms: bool = True) -> WidthPlan:
    """Rank every targeted axis; heads are ranked within their KV group, groups by the L2 of their heads."""
    dst = target.resolve(src)
    importance.check_matches(src)
    identity = torch.arange

    hidden = _top(importance.hidden, dst.hidden) if target.hidden_size else identity(src.hidden)
    def neurons(scores: torch.Tensor) -> torch.Tensor:
        return _top(scores, dst.ffn) if target.intermediate_size else identity(src.ffn)

    # with experts, each expert keeps its own best neurons
    ffn = [[neurons(s) for s in layer] if src.experts else neurons(layer) for layer in importance.ffn]
    experts = [_top(s, dst.experts) if target.num_experts else identity(src.experts)
               for s in importance.experts] if src.experts else None
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
    return WidthPlan(source=src, dims=dst, hidden=hidden, ffn=ffn, q_heads=q_heads, kv_heads=kv_heads,
                     experts=experts, norm_scale=scale)


def _channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Head indices -> the rows/columns of their head_dim channels."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()


def _stacked(axes: tuple[str, ...], keep: dict[str, torch.Tensor], sizes: dict[str, int]) -> torch.Tensor:
    """Rows to keep of a projection that stacks `axes` (a fused qkv_proj stacks q, kv, kv): each axis's kept
    indices, offset by the source sizes of the axes stacked before it."""
    offsets = torch.tensor([0] + [sizes[a] for a in axes[:-1]]).cumsum(0)
    return torch.cat([keep[a] + int(offset) for a, offset in zip(axes, offsets)])


def _norm(weight: torch.Tensor, plan: WidthPlan, family: Family, scale: float) -> torch.Tensor:
    """A norm's kept weights with `scale` folded into what it multiplies by: (offset + w) * scale - offset."""
    kept = weight.index_select(0, plan.hidden)
    return (family.norm_offset + kept) * scale - family.norm_offset


def _trim(name: str, tensor: torch.Tensor, plan: WidthPlan, family: Family) -> dict[str, torch.Tensor]:
    """The trimmed copy of one named parameter, by name: an expert's parameters may be renamed or dropped."""
    prefix, _, inner = name.partition(".layers.")
    layer, _, inner = inner.partition(".")
    if family.experts and inner.split(".")[0] in family.experts.blocks:
        return moe.trim(inner, tensor, int(layer), plan, family, f"{prefix}.layers.{layer}.")
    return {name: _trim_one(name, tensor, plan, family)}


def _trim_one(name: str, tensor: torch.Tensor, plan: WidthPlan, family: Family) -> torch.Tensor:
    src, dst = plan.source, plan.dims
    # Gemma multiplies embeddings by sqrt(hidden_size): folding sqrt(H/h) into them keeps the residual stream
    # the masked teacher's. A tied lm_head then reads logits that much larger; the final norm takes it back.
    embedding_factor = math.sqrt(src.hidden / dst.hidden) if family.embedding_scaled else 1.0
    module, _, kind = name.rpartition(".")
    parts = module.split(".")
    if name == "model.embed_tokens.weight":
        return tensor.index_select(1, plan.hidden) * embedding_factor
    if name == "lm_head.weight":
        return tensor.index_select(1, plan.hidden)
    if module == "model.norm":
        head_factor = embedding_factor if dst.tied else 1.0
        return _norm(tensor, plan, family, plan.norm_scale / head_factor) if kind == "weight" else \
            tensor.index_select(0, plan.hidden)
    if parts[:2] != ["model", "layers"] or len(parts) < 4:
        raise BadInput(f"cannot width-prune parameter {name!r}: it is not part of a {family.architecture} layout")
    inner, layer = ".".join(parts[3:]), int(parts[2])
    if inner in family.kept:
        return tensor.detach()  # a new handle on the same storage, which outlives the parameter's release
    if inner in family.hidden_norms:
        return _norm(tensor, plan, family, plan.norm_scale) if kind == "weight" else tensor.index_select(0, plan.hidden)
    if inner not in family.projections:
        raise BadInput(f"cannot width-prune parameter {name!r}: it is not part of a {family.architecture} layout")
    keep = {"hidden": plan.hidden, "ffn": plan.ffn[layer], "q": _channels(plan.q_heads[layer], src.head_dim),
            "kv": _channels(plan.kv_heads[layer], src.head_dim)}
    sizes = {"hidden": src.hidden, "ffn": src.ffn, "q": src.heads * src.head_dim, "kv": src.kv_heads * src.head_dim}
    rows, cols = family.projections[inner]
    out = tensor.index_select(0, _stacked(rows, keep, sizes))
    return out.index_select(1, keep[cols]) if kind == "weight" else out


def _set_embedding_scale(model, family: Family) -> None:
    """transformers 5 keeps Gemma's sqrt(hidden_size) in a buffer; `build_model` copied the teacher's."""
    embedding = model.get_input_embeddings()
    if family.embedding_scaled and isinstance(getattr(embedding, "embed_scale", None), torch.Tensor):
        embedding.embed_scale = torch.tensor(model.config.hidden_size ** 0.5, dtype=embedding.embed_scale.dtype)


@torch.no_grad()
def apply_width(model, plan: WidthPlan):
    """Return the pruned model. `model` is consumed: each weight is released once trimmed, so the peak
    memory stays near one copy of the teacher instead of teacher plus student."""
    family = check_supported(model.config)
    tensors = {}
    for name, param in list(model.named_parameters()):
        tensors.update({key: value.contiguous() for key, value in _trim(name, param, plan, family).items()})
        param.data = torch.empty(0, dtype=param.dtype)  # drop the teacher's copy now
    if plan.dims.tied:
        tensors.pop("lm_head.weight", None)
    pruned = build_model(derive_config(model.config, dims=plan.dims), tensors, like=model)
    _set_embedding_scale(pruned, family)
    return pruned


def prune_width(model, importance: Importance, target: WidthTarget, rescale_norms: bool = True):
    """Rank by `importance`, trim `model` (consumed) to `target`, and return the pruned model."""
    plan = plan_width(importance, Dims.of(model.config), target, rescale_norms=rescale_norms)
    return apply_width(model, plan)
