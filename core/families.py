"""Where each model family keeps the axes Minitron prunes: one table entry per family, read by every pruner.

    minitron arch --config recipes/configs/qwen3-8b.json          # any family below, from its config alone

Axes: "hidden" (the residual stream's channels), "ffn" (MLP neurons), "q" (query-head channels) and "kv"
(KV-group channels). A projection's rows stack one or more axes (Phi-3's fused `qkv_proj` stacks q, k and v;
its `gate_up_proj` stacks the gate's and the up projection's neurons); its columns run over one axis; a bias
follows the rows. Norms over the residual channels are cut with them and rescaled (`compress.width`). Anything
else in a layer (Qwen3's and Gemma 3's per-head q/k norms run over head_dim, which width pruning keeps) stays
as it is.

Mixture-of-experts families (Mixtral, Qwen3-MoE) add two axes, "experts" and each expert's FFN width (the
"ffn" axis there), described by `Experts` and cut by `compress.experts`.

Adding a family is one entry here plus its tiny config in `tests/conftest.py`: the parity tests (keeping every
unit reproduces the logits, removing a unit equals masking it, reload and generate with and without a KV
cache) then run on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minitron.core.errors import BadInput

ATTENTION = {"self_attn.q_proj": (("q",), "hidden"), "self_attn.k_proj": (("kv",), "hidden"),
             "self_attn.v_proj": (("kv",), "hidden"), "self_attn.o_proj": (("hidden",), "q")}
GATED_MLP = {"mlp.gate_proj": (("ffn",), "hidden"), "mlp.up_proj": (("ffn",), "hidden"),
             "mlp.down_proj": (("hidden",), "ffn")}
PRE_NORMS = ("input_layernorm", "post_attention_layernorm")
"""Llama's two norms: before attention, and (despite the name) before the MLP."""
SANDWICH_NORMS = PRE_NORMS + ("pre_feedforward_layernorm", "post_feedforward_layernorm")
"""Gemma's four: around attention (its post_attention_layernorm normalizes the attention output) and the MLP."""
QK_NORMS = ("self_attn.q_norm", "self_attn.k_norm")
MODELOPT_MATRIX = "(Model-Optimizer examples/llm_ptq/README.md); the export itself is generic"


@dataclass(frozen=True)
class Experts:
    """Where a mixture-of-experts family keeps its experts. transformers 5 stores them fused, as
    `experts.gate_up_proj` [E, 2F, H] and `experts.down_proj` [E, H, F] beside a router `gate.weight` [E, H];
    4.57 keeps one module per expert, `experts.{j}.{gate, up, down}`. Both layouts are read and cut."""

    count_key: str
    """The config field holding the number of experts."""
    ffn_key: str
    """The config field holding each expert's FFN width (the "ffn" axis of a mixture-of-experts model)."""
    blocks: tuple[str, ...]
    """The sparse block's path inside a decoder layer, in each transformers version that names it differently."""
    per_expert: tuple[str, str, str]
    """The gate, up and down projections of one expert where each is its own module (transformers 4.57)."""
    renormalize: bool | str
    """Whether the top-k routing weights are renormalized to sum to 1: always (True), or as a config field says."""


@dataclass(frozen=True)
class Family:
    """Where one family keeps its prunable axes, and what its norms and embeddings compute."""

    model_type: str
    """`config.model_type`."""
    architecture: str
    """The transformers causal-LM class, as `config.architectures` names it."""
    projections: dict = field(default_factory=lambda: {**ATTENTION, **GATED_MLP})
    """Module path inside a decoder layer -> (axes stacked along its rows, the axis of its columns)."""
    hidden_norms: tuple[str, ...] = PRE_NORMS
    """Norms inside a layer that run over the residual channels; their outputs score the hidden channels."""
    kept: tuple[str, ...] = ()
    """Modules inside a layer that width pruning leaves as they are (per-head norms over head_dim)."""
    norm_offset: float = 0.0
    """1.0 where a norm multiplies by (1 + weight) (Gemma; Nemotron's LayerNorm1P), 0.0 where by weight."""
    norm_centers: bool = False
    """A LayerNorm: it subtracts the mean over the channels, so removing hidden channels is close to masking
    them but not exact (see `compress.width`)."""
    embedding_scaled: bool = False
    """Embeddings are multiplied by sqrt(hidden_size) (Gemma), a factor that changes when hidden channels go."""
    neuron_input: str | None = "mlp.down_proj"
    """The module whose input is the MLP neurons' activation (after the gate), which scores them; None where the
    neurons live in experts (scored by `compress.experts`)."""
    head_input: str = "self_attn.o_proj"
    """The module whose input is the attention heads' concatenated outputs, which scores them."""
    experts: Experts | None = None
    """A mixture-of-experts family's expert layout; None for a dense MLP."""
    engine_caveats: dict = field(default_factory=dict)
    """Engine ("modelopt", "trtllm", "vllm") -> why its support for this family is unconfirmed. A family without
    an entry is in that engine's documented FP8 support. Read from the engines' sources and docs, not run here."""


FAMILIES = {f.architecture: f for f in (
    Family("llama", "LlamaForCausalLM"),
    Family("mistral", "MistralForCausalLM"),
    Family("qwen2", "Qwen2ForCausalLM"),  # q/k/v biases follow their rows
    Family("qwen3", "Qwen3ForCausalLM", kept=QK_NORMS),
    Family("gemma2", "Gemma2ForCausalLM", hidden_norms=SANDWICH_NORMS, norm_offset=1.0, embedding_scaled=True,
           engine_caveats={"modelopt": f"Gemma 2 is not in ModelOpt's FP8 support matrix {MODELOPT_MATRIX}",
                           "trtllm": "the PyTorch backend registers Gemma2ForCausalLM only on recent main "
                                     "(_torch/models/modeling_gemma2.py), not in 1.2's supported-models list; "
                                     "softcapping makes FP8 attention its riskiest case"}),
    Family("gemma3_text", "Gemma3ForCausalLM", hidden_norms=SANDWICH_NORMS, kept=QK_NORMS, norm_offset=1.0,
           embedding_scaled=True),
    Family("phi3", "Phi3ForCausalLM",
           projections={"self_attn.qkv_proj": (("q", "kv", "kv"), "hidden"), "self_attn.o_proj": (("hidden",), "q"),
                        "mlp.gate_up_proj": (("ffn", "ffn"), "hidden"), "mlp.down_proj": (("hidden",), "ffn")},
           engine_caveats={"trtllm": "ModelOpt FP8 checkpoints of the fused qkv/gate_up load only in releases "
                                     "after TensorRT-LLM PR #6761 (August 2025); its quantization.md still marks "
                                     "Phi FP8 unsupported"}),
    Family("nemotron", "NemotronForCausalLM",
           projections={**ATTENTION, "mlp.up_proj": (("ffn",), "hidden"), "mlp.down_proj": (("hidden",), "ffn")},
           norm_offset=1.0, norm_centers=True,
           engine_caveats={"modelopt": f"Nemotron-4 is not in ModelOpt's FP8 support matrix {MODELOPT_MATRIX}",
                           "trtllm": "the PyTorch backend registers NemotronForCausalLM, but no FP8 test of it "
                                     "was found"}),
    Family("mixtral", "MixtralForCausalLM", projections=ATTENTION, neuron_input=None,
           experts=Experts("num_local_experts", "intermediate_size", ("mlp", "block_sparse_moe"),
                           ("w1", "w3", "w2"), renormalize=True)),
    Family("qwen3_moe", "Qwen3MoeForCausalLM", projections=ATTENTION, kept=QK_NORMS, neuron_input=None,
           experts=Experts("num_experts", "moe_intermediate_size", ("mlp",), ("gate_proj", "up_proj", "down_proj"),
                           renormalize="norm_topk_prob")),
)}
"""Every family the pruners cover, by architecture."""


class UnsupportedModelError(BadInput):
    """A model family or layout the pruners do not cover; the message lists the supported ones."""


def check_supported(config) -> Family:
    """The family of `config`, or an error naming every supported architecture."""
    archs = list(getattr(config, "architectures", None) or [])
    arch = next((a for a in archs if a in FAMILIES), None)
    if arch is None and not archs:  # a config built in code, with no architectures field
        arch = next((a for a, f in FAMILIES.items() if f.model_type == getattr(config, "model_type", None)), None)
    if arch is None:
        found = ", ".join(archs) or f"model_type={getattr(config, 'model_type', None)!r}"
        raise UnsupportedModelError(f"unsupported architecture {found}; supported: {', '.join(FAMILIES)}")
    family = FAMILIES[arch]
    if family.experts and (getattr(config, "mlp_only_layers", None) or getattr(config, "decoder_sparse_step", 1) != 1):
        raise UnsupportedModelError(f"{arch} with dense layers among the sparse ones (mlp_only_layers, "
                                    "decoder_sparse_step) is not supported yet: every layer must hold experts")
    return family


def engine_caveat(family: Family, engine: str) -> str | None:
    """A sentence for the user when `engine`'s support of `family` is unconfirmed, else None."""
    reason = family.engine_caveats.get(engine)
    return f"{engine} support for {family.architecture} is unconfirmed: {reason}" if reason else None
