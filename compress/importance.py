"""Activation-based importance of every prunable unit, from forward passes on a calibration set.

    scores = estimate_importance(model, calib.batches(batch_size=8))
    scores.save("importance.safetensors")          # one estimation serves several width targets

What is scored (the Minitron recipe, as ModelOpt implements it for Megatron):
- MLP neurons: the activation entering `down_proj` (after the gate, if any), per neuron.
- attention heads: the per-head output entering `o_proj`, an L2 norm over head_dim of the per-channel
  scores; the pruner ranks heads within their KV group so grouped-query attention stays valid.
- embedding channels: the outputs of every norm over the residual channels (each layer's, as
  `core.families` lists them, and the final one), summed.
- layers: Block Influence, the mean over tokens of 1 - cos(layer input, layer output).
- experts and their neurons (mixture-of-experts models): see `compress.experts`; the aggregation options
  below apply to the dense axes only.

Aggregation: per sample over the sequence (`seq_agg`: mean of |x| (default), l2, max), then over samples
(`batch_agg`: l2 (default), mean, max). With the defaults a channel's score is
sqrt(sum_b (mean_s |x_bs|)^2), exactly ModelOpt's `x.abs().mean(seq).pow(2).sum(batch)` then sqrt.

Only the decoder runs (no lm_head): its logits are never needed, which keeps the estimation cheaper than
a plain forward of the causal LM.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from minitron.compress import experts as moe
from minitron.core.arch import Dims
from minitron.core.errors import BadInput
from minitron.core.families import check_supported
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

SEQ_AGGREGATIONS = {"mean": 1, "l2": 2, "max": math.inf}  # vector-norm order over the sequence
BATCH_AGGREGATIONS = ("l2", "mean", "max")


@dataclass
class Importance:
    """Scores of one model; higher means more important. Shapes: hidden [H], ffn [L, F] (with experts
    [L, E, F], each expert's neurons), heads [L, heads], layers [L], experts [L, E] (None for a dense model)."""

    hidden: torch.Tensor
    ffn: torch.Tensor
    heads: torch.Tensor
    layers: torch.Tensor
    experts: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def random(cls, dims: Dims, seed: int = 0) -> "Importance":
        """Scores drawn at random: the paper's 'random pruning' baseline (Figure 6) ranks units by these."""
        g = torch.Generator().manual_seed(seed)
        return cls(hidden=torch.rand(dims.hidden, generator=g), ffn=torch.rand(_ffn_shape(dims), generator=g),
                   heads=torch.rand(dims.layers, dims.heads, generator=g), layers=torch.rand(dims.layers, generator=g),
                   experts=torch.rand(dims.layers, dims.experts, generator=g) if dims.experts else None,
                   meta={"random": True, "seed": seed})

    @classmethod
    @torch.no_grad()
    def magnitude(cls, model) -> "Importance":
        """Scores from the weights alone, no data: each unit's L2 norm over every weight it owns (a neuron's gate
        and up rows and down column; a head's query rows and o columns; a hidden channel's column or row in every
        matrix that reads or writes the residual stream, embeddings included). The classic magnitude-pruning
        baseline that activation importance is measured against."""
        family = check_supported(model.config)
        dims = Dims.of(model.config)
        sizes = {"hidden": dims.hidden, "ffn": dims.ffn, "q": dims.heads * dims.head_dim,
                 "kv": dims.kv_heads * dims.head_dim}
        hidden = model.get_input_embeddings().weight.float().pow(2).sum(0)
        ffn, heads, layers, experts = [], [], [], []
        for layer in model.model.layers:
            owned = {axis: torch.zeros(size) for axis, size in sizes.items()}
            for path, (rows, cols) in family.projections.items():
                squares = layer.get_submodule(path).weight.float().pow(2)
                owned[cols] += squares.sum(0)
                for axis, part in zip(rows, squares.sum(1).split([sizes[a] for a in rows])):
                    owned[axis] += part
            hidden += owned["hidden"]
            if family.experts:
                expert, neurons = moe.magnitude(layer, family, dims.experts, hidden)
                experts.append(expert)
                ffn.append(neurons)
            else:
                ffn.append(owned["ffn"].sqrt())
            heads.append(owned["q"].view(dims.heads, dims.head_dim).sum(1).sqrt())
            layers.append(sum(p.float().pow(2).sum() for p in layer.parameters()).sqrt())
        if not dims.tied:
            hidden += model.get_output_embeddings().weight.float().pow(2).sum(0)
        return cls(hidden=hidden.sqrt(), ffn=torch.stack(ffn), heads=torch.stack(heads), layers=torch.stack(layers),
                   experts=torch.stack(experts) if experts else None, meta={"magnitude": True})

    def save(self, path) -> None:
        tensors = {"hidden": self.hidden, "ffn": self.ffn, "heads": self.heads, "layers": self.layers,
                   **({} if self.experts is None else {"experts": self.experts})}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"meta": json.dumps(self.meta)})

    @classmethod
    def load(cls, path) -> "Importance":
        """Scores written by `save` (`minitron importance`); any other file is refused, naming it."""
        from safetensors import SafetensorError, safe_open

        fix = "pass a file written by `minitron importance`, or re-estimate the scores"
        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            tensors = load_file(str(path))
        except (SafetensorError, OSError, json.JSONDecodeError) as err:
            raise BadInput(f"{path} is not an importance file ({err}); {fix}") from None
        missing = {"hidden", "ffn", "heads", "layers"} - set(tensors)
        if missing:
            raise BadInput(f"{path} lacks the {', '.join(sorted(missing))} scores; {fix}")
        return cls(**{k: tensors[k] for k in ("hidden", "ffn", "heads", "layers")}, experts=tensors.get("experts"),
                   meta=meta)

    def check_matches(self, dims: Dims) -> None:
        """Refuse scores computed on another architecture, or that are not finite numbers."""
        shapes = {"hidden": (dims.hidden,), "ffn": _ffn_shape(dims), "heads": (dims.layers, dims.heads),
                  **({"experts": (dims.layers, dims.experts)} if dims.experts else {})}
        for name, shape in shapes.items():
            scores = getattr(self, name)
            if scores is None or tuple(scores.shape) != shape:
                raise BadInput(f"importance scores do not match the model: {name} has shape "
                               f"{None if scores is None else tuple(scores.shape)}, the model needs {shape}; "
                               "re-estimate them")
            if not torch.isfinite(scores.float()).all():
                raise BadInput(f"the {name} importance scores hold NaN or infinite values, so they rank nothing; "
                               "re-estimate them")


def _ffn_shape(dims: Dims) -> tuple[int, ...]:
    return (dims.layers, dims.experts, dims.ffn) if dims.experts else (dims.layers, dims.ffn)


class _Reducer:
    """Accumulates per-sample channel scores [b, C] over batches with the chosen batch aggregation."""

    def __init__(self, batch_agg: str):
        self.batch_agg, self.value, self.count = batch_agg, None, 0

    def add(self, per_sample: torch.Tensor) -> None:
        per_sample = per_sample.float()
        if self.batch_agg == "l2":
            part = per_sample.pow(2).sum(0)
        elif self.batch_agg == "mean":
            part = per_sample.sum(0)
        else:
            part = per_sample.amax(0)
        if self.value is None:
            self.value = part
        elif self.batch_agg == "max":
            self.value = torch.maximum(self.value, part)
        else:
            self.value += part
        self.count += per_sample.shape[0]

    def result(self) -> torch.Tensor:
        if self.batch_agg == "l2":
            return self.value.sqrt()
        if self.batch_agg == "mean":
            return self.value / self.count
        return self.value


@torch.no_grad()
def estimate_importance(model, batches: Iterable[torch.Tensor], seq_agg: str = "mean", batch_agg: str = "l2",
                        total: int | None = None) -> Importance:
    """Score every neuron, head, embedding channel and layer of `model` over `batches` of token ids [b, s]."""
    if seq_agg not in SEQ_AGGREGATIONS:
        raise BadInput(f"seq_agg must be one of {', '.join(SEQ_AGGREGATIONS)}, not {seq_agg!r}")
    if batch_agg not in BATCH_AGGREGATIONS:
        raise BadInput(f"batch_agg must be one of {', '.join(BATCH_AGGREGATIONS)}, not {batch_agg!r}")
    family = check_supported(model.config)
    dims = Dims.of(model.config)
    order = SEQ_AGGREGATIONS[seq_agg]

    def over_sequence(x: torch.Tensor) -> torch.Tensor:  # [b, s, C] -> [b, C]
        reduced = torch.linalg.vector_norm(x, ord=order, dim=1, dtype=torch.float32)
        return reduced / x.shape[1] if seq_agg == "mean" else reduced

    decoder = model.model
    hidden = _Reducer(batch_agg)
    ffn = [_Reducer(batch_agg) for _ in range(dims.layers)]
    attn = [_Reducer(batch_agg) for _ in range(dims.layers)]
    influence_sum = torch.zeros(dims.layers, dtype=torch.float64)
    layer_inputs: dict[int, torch.Tensor] = {}
    hooks = []

    def on_norm(_module, _args, out):
        hidden.add(over_sequence(out))

    def input_hook(reducer):
        return lambda _module, args: reducer.add(over_sequence(args[0]))

    def layer_in(i):
        def hook(_module, args, kwargs):
            layer_inputs[i] = args[0] if args else kwargs["hidden_states"]
        return hook

    def layer_out(i):
        def hook(_module, _args, _kwargs, out):
            out = out[0] if isinstance(out, tuple) else out
            cos = torch.nn.functional.cosine_similarity(layer_inputs.pop(i).float(), out.float(), dim=-1)
            influence_sum[i] += (1 - cos).sum().item()
        return hook

    sparse = [moe.ExpertScores(moe.sparse_block(layer, family)[1], family, model.config) for layer in decoder.layers
              ] if family.experts else []
    for i, layer in enumerate(decoder.layers):
        hooks += [layer.get_submodule(norm).register_forward_hook(on_norm) for norm in family.hidden_norms]
        if sparse:
            hooks.append(sparse[i].block.register_forward_hook(sparse[i].add))
        else:
            hooks.append(layer.get_submodule(family.neuron_input).register_forward_pre_hook(input_hook(ffn[i])))
        hooks += [layer.get_submodule(family.head_input).register_forward_pre_hook(input_hook(attn[i])),
                  layer.register_forward_pre_hook(layer_in(i), with_kwargs=True),
                  layer.register_forward_hook(layer_out(i), with_kwargs=True)]
    hooks.append(decoder.norm.register_forward_hook(on_norm))
    device = next(model.parameters()).device
    num_samples = seq_len = num_tokens = 0
    try:
        for ids in tqdm(batches, total=total, desc="importance", unit="batch"):
            decoder(input_ids=ids.to(device), use_cache=False)
            num_samples += ids.shape[0]
            seq_len = ids.shape[1]
            num_tokens += ids.numel()
    finally:
        for h in hooks:
            h.remove()
    if num_samples == 0:
        raise BadInput("the calibration set is empty: no batches were given")
    head_channels = torch.stack([r.result() for r in attn]).view(dims.layers, dims.heads, dims.head_dim)
    expert_scores = [block.result() for block in sparse]
    return Importance(
        hidden=hidden.result(),
        ffn=torch.stack([neurons for _, neurons in expert_scores] if sparse else [r.result() for r in ffn]),
        heads=torch.linalg.vector_norm(head_channels, dim=-1),
        layers=(influence_sum / num_tokens).float(),
        experts=torch.stack([experts for experts, _ in expert_scores]) if sparse else None,
        meta={"num_samples": num_samples, "seq_len": seq_len, "seq_agg": seq_agg, "batch_agg": batch_agg,
              "dims": dims.__dict__},
    )
