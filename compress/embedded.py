"""The embedded default: a small Llama teacher and its data, built from what every Python install has.

    python -m minitron.compress.embedded --out work/embedded          # corpora, tokenizer, pretrained teacher (~2 min)
    python -m minitron.compress.embedded --out /tmp/e --steps 20      # CPU smoke settings (seconds)

Two corpora with different distributions, as in the paper's setting where the distillation data is not
the teacher's pretraining data:
- `code.jsonl`: the sources of the standard library's top-level modules (the teacher's own data);
- `prose.jsonl`: the Python reference documentation (`pydoc_data.topics`) and the modules' docstrings
  (the distillation data, which teacher correction adapts the teacher to). A fifth of the reference topics
  is held out of both, for the in-domain accuracy task `minitron_stdlib_cloze` (evals/stdlib_cloze.py).
The tokenizer is trained locally on both; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from minitron.compress.tokenizer import train_tokenizer
from minitron.core.stdlib_corpus import code_documents, prose_documents, write_jsonl

log = logging.getLogger(__name__)


def tiny_llama_config(vocab_size: int, tokenizer):
    """About 2.6M parameters: trains at a few thousand tokens/s on a 2-core CPU."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=8,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )


PRETRAIN_LR = 5e-3
"""Peak LR of the teacher's pretraining; teacher correction runs at one fifth of it, as in the paper."""


def pretrain_config(steps: int, seed: int, precision: str = "auto"):
    from minitron.compress.train_config import TrainConfig

    return TrainConfig(steps=steps, seq_len=256, global_batch=16, micro_batch=8, lr=PRETRAIN_LR, min_lr=1e-4,
                       warmup=max(1, steps // 20), kd=False, eval_every=max(1, steps // 5), save_every=steps,
                       seed=seed, precision=precision)


def build(out: Path, vocab_size: int = 2048, steps: int = 300, seed: int = 0, precision: str = "auto") -> Path:
    """Write the corpora, the tokenizer, a freshly initialised teacher (`teacher-init/`) and the teacher
    pretrained on the code corpus for `steps` steps (`teacher/`) under `out`."""
    from minitron.compress.train import fit
    from minitron.core.model_io import save_checkpoint
    from minitron.core.records import output_dir
    from transformers import AutoModelForCausalLM

    code, prose = code_documents(), prose_documents()  # every module: the tiny suite has no code task to keep clean
    with output_dir(out, overwrite=True) as tmp:
        write_jsonl(tmp / "code.jsonl", code)
        write_jsonl(tmp / "prose.jsonl", prose)
        tokenizer = train_tokenizer(code + prose, vocab_size=vocab_size)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer), tokenizer), dtype=torch.float32)
        save_checkpoint(model, tokenizer, tmp / "teacher-init")
        if steps:
            records = fit(str(tmp / "teacher-init"), str(tmp / "code.jsonl"), tmp / "teacher",
                          pretrain_config(steps, seed, precision), stage="pretrain")
            log.info("teacher pretrained on stdlib code: validation loss %.3f -> %.3f", records[0]["val_loss"],
                     records[-1]["val_loss"])
    log.info("embedded default: %d code and %d prose documents, %.2fM-parameter teacher -> %s",
             len(code), len(prose), sum(p.numel() for p in model.parameters()) / 1e6, out)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("work/embedded"))
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=300, help="Pretraining steps of the teacher (0: none).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.out, args.vocab_size, args.steps, args.seed)
