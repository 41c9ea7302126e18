"""Tiny random models of every supported family, and a tokenizer trained here: nothing comes from a hub."""

from __future__ import annotations

import pathlib
import sysconfig

import pytest
import torch
from minitron.compress.tokenizer import train_tokenizer

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "nemotron"]
EXACT_FAMILIES = [f for f in FAMILIES if f != "nemotron"]
MOE_FAMILIES = ["mixtral", "qwen3_moe"]
"""Mixture-of-experts families: their experts replace the dense MLP the FAMILIES' tests reach into."""
"""Families whose hidden-channel pruning equals masking; Nemotron's LayerNorm centres over the channels."""
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
                 "phi3": "Phi3ForCausalLM", "nemotron": "NemotronForCausalLM", "mixtral": "MixtralForCausalLM",
                 "qwen3_moe": "Qwen3MoeForCausalLM"}


def _family_settings(family: str, layers: int, head_dim: int, ffn: int) -> dict:
    """Gemma's own fields: its query scaling, and sliding layers alternating with full ones, with a window
    shorter than the test sequences so the two kinds differ. Experts: 4 per layer, 2 per token; Mixtral
    renormalizes the two routing weights, this Qwen3-MoE does not."""
    if family == "mixtral":
        return {"num_local_experts": 4, "num_experts_per_tok": 2}
    if family == "qwen3_moe":
        return {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": ffn, "norm_topk_prob": False}
    if not family.startswith("gemma"):
        return {}
    return {"query_pre_attn_scalar": head_dim, "sliding_window": 8,
            "layer_types": [("sliding_attention", "full_attention")[i % 2] for i in range(layers)]}


def stdlib_texts(n_files: int = 12) -> list[str]:
    """A few Python standard-library sources: real text that every machine with Python has."""
    files = sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:n_files]
    return [f.read_text(errors="ignore") for f in files]


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(stdlib_texts(), vocab_size=384)


def tiny_config(family: str = "llama", *, tie: bool = False, hidden: int = 48, heads: int = 6, kv_heads: int = 2,
                head_dim: int = 12, ffn: int = 96, layers: int = 4, vocab: int = 384, positions: int = 256):
    """hidden/heads = 8 while head_dim = 12, and 3 query heads per KV group: the awkward cases on purpose."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(
        family, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, vocab_size=vocab, max_position_embeddings=positions,
        tie_word_embeddings=tie, bos_token_id=0, eos_token_id=1, pad_token_id=2, rms_norm_eps=1e-6, norm_eps=1e-6,
        **_family_settings(family, layers, head_dim, ffn),
    )
    cfg.architectures = [ARCHITECTURES[family]]
    return cfg


def tiny_model(family: str = "llama", seed: int = 0, **kw):
    """A random model in fp32 whose weights are large enough that pruning mistakes move the logits."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **kw), dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)  # non-unit norm weights, so rescaling mistakes show
            elif p.dim() == 2:
                p.normal_(0, 0.15)
            else:
                p.normal_(0, 0.1)  # q/k/v biases of Qwen2, Nemotron's norm biases
    return model.eval()


def sample_ids(vocab: int = 384, batch: int = 2, seq: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def flat_importance(model, **low):
    """Every unit scores 1 except the ones listed in `low` (name -> index expression), which score 0."""
    from minitron.compress.importance import Importance
    from minitron.core.arch import Dims

    d = Dims.of(model.config)
    experts = (d.experts,) if d.experts else ()
    imp = Importance(hidden=torch.ones(d.hidden), ffn=torch.ones(d.layers, *experts, d.ffn),
                     heads=torch.ones(d.layers, d.heads), layers=torch.ones(d.layers),
                     experts=torch.ones(d.layers, d.experts) if d.experts else None)
    for name, index in low.items():
        getattr(imp, name)[index] = 0.0
    return imp
