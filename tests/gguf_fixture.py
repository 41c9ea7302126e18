"""Write a tiny HF Llama as a llama.cpp GGUF file, the way llama.cpp's convert_hf_to_gguf.py lays it out, so the
GGUF input path is tested without downloading a model file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# HF parameter name inside `model.layers.N.` -> llama.cpp tensor name inside `blk.N.`
LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order: per head, the two rotary halves interleaved (HF keeps them as halves).
    Copied from convert_hf_to_gguf.py's LlamaModel.permute; transformers' loader reverses it."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_tiny_gguf(model, tokenizer, path: str | Path, file_type: str = "F32", chat_template: str | None = None,
                    name: str = "tiny-llama") -> Path:
    """`model` (a LlamaForCausalLM) and `tokenizer` (a byte-level BPE, e.g. `train_tokenizer`'s) as a GGUF file.

    file_type "F32" writes every tensor as float32, so a conversion back is exact. "Q8_0" quantizes the 2-D
    weights whose rows are a multiple of the 32-value block, and keeps the others (and the norms) in float32,
    as llama.cpp does for tensors that do not fit a block."""
    import gguf

    cfg = model.config
    qtype = {"F32": None, "Q8_0": gguf.GGMLQuantizationType.Q8_0}[file_type]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    theta = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", 1e4)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if qtype is None else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    # transformers takes head_dim from rope.dimension_count (llama: full rotary); llama.cpp also reads key/value
    # length, which convert_hf_to_gguf writes when head_dim != hidden/heads.
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)

    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "token ids must be contiguous"
    special = set(tokenizer.all_special_ids)
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the GPT-2 split regex, which is what ByteLevel(use_regex=True) applies
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(True)  # train_tokenizer's post-processor prepends BOS
    if chat_template:
        writer.add_chat_template(chat_template)

    def add(name: str, tensor) -> None:
        data = tensor.detach().float().numpy()
        if qtype is not None and data.ndim == 2 and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, data)

    state = model.state_dict()
    add("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, cpp in LAYER_TENSORS.items():
            weight = state[f"model.layers.{i}.{hf}.weight"]
            if cpp == "attn_q":
                weight = permute(weight, cfg.num_attention_heads)
            elif cpp == "attn_k":
                weight = permute(weight, cfg.num_key_value_heads)
            add(f"blk.{i}.{cpp}.weight", weight)
    add("output_norm.weight", state["model.norm.weight"])
    if not cfg.tie_word_embeddings:  # a missing output.weight is how a GGUF says "tied"
        add("output.weight", state["lm_head.weight"])

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def write_header_only_gguf(path: str | Path, architecture: str) -> Path:
    """A GGUF file with metadata and no tensors, e.g. to see a foreign architecture refused."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name(f"tiny-{architecture}")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
