"""What a model is, from its config alone: dimensions, pruning targets, parameter counts (families: core.families).

    minitron arch --config recipes/configs/llama-3.1-8b.json --hidden-size 3072 --ffn-hidden-size 9216 --json

Counting happens on the meta device: no weights are allocated or downloaded, so an 8B or 12B
config is counted in a second on a laptop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from minitron.core.errors import BadInput
from minitron.core.families import check_supported

BYTES = {"fp8": 1.0, "int8": 1.0, "nvfp4": 0.5, "bfloat16": 2.0, "float16": 2.0, "float32": 4.0}
"""Bytes per stored value of each dtype, by its canonical name (`normalize_dtype`)."""
_ALIASES = {"fp8": "fp8", "float8_e4m3fn": "fp8", "int8": "int8", "nvfp4": "nvfp4", "fp4": "nvfp4",
            "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "half": "float16",
            "fp32": "float32", "float32": "float32", "float": "float32"}


def normalize_dtype(name) -> str | None:
    """'bf16', 'torch.bfloat16', 'FP8', ... -> 'bfloat16', 'fp8'; None/'auto' -> None."""
    if name is None:
        return None
    text = str(name).lower().removeprefix("torch.")
    if text in ("auto", "none", ""):
        return None
    if text not in _ALIASES:
        raise BadInput(f"unknown dtype {name!r}; expected one of {', '.join(sorted(set(_ALIASES.values())))}")
    return _ALIASES[text]


def dtype_bytes(dtype: str | None, what: str = "value") -> float:
    """Bytes per value of `dtype` (any alias `normalize_dtype` knows); `what` names it in the error."""
    canonical = _ALIASES.get(str(dtype).lower().removeprefix("torch."))
    if canonical is None:
        raise BadInput(f"no byte size for the {what} dtype {dtype!r}; expected one of {', '.join(BYTES)}")
    return BYTES[canonical]


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, value_bytes: float) -> float:
    """KV cache per token of context: a key and a value of `head_dim` for every KV head of every layer."""
    return 2 * layers * kv_heads * head_dim * value_bytes


@dataclass(frozen=True)
class Dims:
    """The axes Minitron prunes, read from a config."""

    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int
    tied: bool
    experts: int = 0
    """Experts per layer of a mixture-of-experts model (0: a dense MLP, whose neurons `ffn` counts; with experts,
    `ffn` is each expert's width)."""
    top_k: int = 0
    """Experts each token is routed to."""

    @classmethod
    def of(cls, config) -> "Dims":
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        moe = check_supported(config).experts
        return cls(
            hidden=config.hidden_size, ffn=getattr(config, moe.ffn_key if moe else "intermediate_size"),
            heads=config.num_attention_heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            head_dim=head_dim, layers=config.num_hidden_layers, vocab=config.vocab_size,
            tied=bool(getattr(config, "tie_word_embeddings", False)),
            experts=getattr(config, moe.count_key) if moe else 0, top_k=config.num_experts_per_tok if moe else 0,
        )

    @property
    def group_size(self) -> int:
        """Query heads that share one KV head."""
        return self.heads // self.kv_heads


@dataclass(frozen=True)
class WidthTarget:
    """Target sizes of a width prune; None keeps the source's size."""

    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    num_experts: int | None = None
    """Experts to keep per layer (mixture-of-experts models only)."""

    def resolve(self, src: Dims) -> Dims:
        """The target's dimensions, validated against the source; raises ValueError naming the flag to change."""
        def given(value, default):
            return default if value is None else value

        heads = given(self.num_attention_heads, src.heads)
        kv = self.num_key_value_heads
        if kv is None:
            # Multi-head attention has one head per KV group, so pruning heads prunes groups too.
            kv = heads if src.group_size == 1 else src.kv_heads
        for flag, want, have in [("--hidden-size", self.hidden_size, src.hidden),
                                 ("--ffn-hidden-size", self.intermediate_size, src.ffn),
                                 ("--num-heads", heads, src.heads), ("--num-kv-heads", kv, src.kv_heads)]:
            if want is not None and not 0 < want <= have:
                raise BadInput(f"{flag} {want} is out of range: the source has {have}; pick 1..{have}")
        if heads % kv:
            raise BadInput(f"--num-heads {heads} does not split evenly over {kv} KV groups; "
                             f"pick a multiple of {kv} (or change --num-kv-heads)")
        if heads // kv > src.group_size:
            raise BadInput(f"{heads} heads over {kv} KV groups needs {heads // kv} heads per group, but the "
                             f"source groups hold {src.group_size}; lower --num-heads or raise --num-kv-heads")
        experts = given(self.num_experts, src.experts)
        if self.num_experts is not None and not src.experts:
            raise BadInput("--num-experts applies to mixture-of-experts models only; this model has a dense MLP")
        if self.num_experts is not None and not src.top_k <= experts <= src.experts:
            raise BadInput(f"--num-experts {experts} is out of range: the source has {src.experts} experts and routes "
                           f"each token to {src.top_k}; pick {src.top_k}..{src.experts}")
        for flag, want in (("--hidden-size", self.hidden_size), ("--ffn-hidden-size", self.intermediate_size)):
            if src.experts and want is not None and want % 8:
                # transformers 5 runs experts as grouped GEMMs, whose rows must span a multiple of 16 bytes
                raise BadInput(f"{flag} {want} is not a multiple of 8, which a mixture-of-experts model needs "
                               f"(transformers 5's grouped expert GEMMs); pick {want - want % 8} or {want - want % 8 + 8}")
        return Dims(hidden=given(self.hidden_size, src.hidden), ffn=given(self.intermediate_size, src.ffn), heads=heads,
                    kv_heads=kv, head_dim=src.head_dim, layers=src.layers, vocab=src.vocab, tied=src.tied,
                    experts=experts, top_k=src.top_k)


def derive_config(config, dims: Dims | None = None, keep_layers: list[int] | None = None):
    """A copy of `config` with new width `dims` and/or only the layers in `keep_layers`.

    head_dim is always written explicitly: after width pruning hidden/heads no longer equals it.
    """
    cfg = copy.deepcopy(config)
    if dims is not None:
        moe = check_supported(config).experts
        cfg.hidden_size = dims.hidden
        setattr(cfg, moe.ffn_key if moe else "intermediate_size", dims.ffn)
        if moe:
            setattr(cfg, moe.count_key, dims.experts)
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = dims.heads, dims.kv_heads, dims.head_dim
    if keep_layers is not None:
        cfg.num_hidden_layers = len(keep_layers)
        if getattr(cfg, "layer_types", None):  # per-layer attention kinds (sliding window) follow their layer
            cfg.layer_types = [cfg.layer_types[i] for i in keep_layers]
    try:  # rebuild through the constructor, so transformers' own validation runs now, not at reload
        return type(cfg).from_dict(cfg.to_dict())
    except Exception as err:
        import transformers

        raise BadInput(f"transformers {transformers.__version__} rejects the target config: {err}; "
                         "pick other target sizes") from None


def count_params(config) -> dict[str, int]:
    """Total and non-embedding parameters (total minus input embedding and an untied lm_head); for a
    mixture-of-experts model also the parameters active per token (all but the experts a token is not routed to)."""
    from transformers import AutoModelForCausalLM

    check_supported(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # tied weights are yielded once
    dims = Dims.of(config)
    embedding = model.get_input_embeddings().weight.numel()
    if not dims.tied:
        embedding += model.get_output_embeddings().weight.numel()
    counts = {"params": total, "non_embedding_params": total - embedding}
    if dims.experts:  # each expert: gate and up [F, H], down [H, F]
        counts["active_params"] = total - dims.layers * (dims.experts - dims.top_k) * 3 * dims.hidden * dims.ffn
    return counts


def target_counts(source, target: "WidthTarget", num_layers: int | None = None) -> dict:
    """Parameter counts of `source` (a config) and of its pruning to `target` keeping the first `num_layers`
    layers (a depth prune keeps that many; which ones does not change the count), from the configs alone:
    {"source": counts, "target": counts with the target's `dims`}."""
    derived = pruned_config(source, target, num_layers)
    return {"source": count_params(source), "target": {**count_params(derived), "dims": {**Dims.of(derived).__dict__}}}


def pruned_config(source, target: "WidthTarget", num_layers: int | None = None):
    """The config of `source` pruned to `target` keeping `num_layers` layers (which ones does not change it)."""
    check_supported(source)
    dims = target.resolve(Dims.of(source))
    if num_layers is not None and not 0 < num_layers <= dims.layers:
        raise BadInput(f"--num-layers {num_layers} is out of range: the source has {dims.layers} layers")
    return derive_config(source, dims, list(range(num_layers)) if num_layers else None)


def human_count(n: int) -> str:
    """123456789 -> '123.457M', 8030261248 -> '8.030B'."""
    return f"{n / 1e9:.3f}B" if n >= 1e9 else f"{n / 1e6:.3f}M"
