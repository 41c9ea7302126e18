"""What the benchmark scripts share: best-of-N timing and the Llama shape they measure on."""

import time

from transformers import LlamaConfig


def best_time(fn, repeats: int, warmup: bool = True) -> float:
    """The fastest of `repeats` runs of `fn`, in seconds: the least disturbed by the rest of the machine."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def llama_config(hidden: int, layers: int, vocab: int, positions: int = 2048) -> LlamaConfig:
    """Llama proportions: SwiGLU at 2.75x, 64-dim heads, 4 query heads per KV head."""
    return LlamaConfig(hidden_size=hidden, intermediate_size=int(hidden * 2.75), num_hidden_layers=layers,
                       num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 256), head_dim=64,
                       vocab_size=vocab, max_position_embeddings=positions)
