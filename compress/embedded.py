"""The embedded default: a small Llama teacher and its data, built from what every Python install has.

    python -m compress.embedded --out work/embedded          # corpora, tokenizer, pretrained teacher (~2 min)
    python -m compress.embedded --out /tmp/e --steps 20      # CPU smoke settings (seconds)

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
import ast
import json
import logging
import sysconfig
import zlib
from pathlib import Path

import torch

from compress.tokenizer import train_tokenizer

log = logging.getLogger(__name__)


def _stdlib_files() -> list[Path]:
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def is_held_out_module(stem: str) -> bool:
    """About a tenth of the standard library's modules, chosen by name (stable across Python versions), are kept
    out of the stdlib corpus: `evals/stdlib_next_line.py` builds a code-completion task from them."""
    return zlib.crc32(stem.encode()) % 10 == 0


def code_documents(held_out: bool | None = None) -> list[str]:
    """The standard library's module sources: every one (None), or only the held-out ones (True) or the others."""
    return [f.read_text(errors="ignore") for f in _stdlib_files()
            if held_out is None or is_held_out_module(f.stem) == held_out]


def is_held_out(topic: str) -> bool:
    """About a fifth of the reference manual's topics, chosen by name (stable across Python versions), are
    kept out of every corpus: `evals/stdlib_cloze.py` builds an in-domain accuracy task from them."""
    return zlib.crc32(topic.encode()) % 5 == 0


def reference_topics(held_out: bool) -> list[str]:
    """The reference manual's topics (`pydoc_data.topics`), the held-out ones or the others, sorted by name."""
    import pydoc_data.topics

    return [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics) if is_held_out(k) == held_out]


def _docstrings():
    """(module name, AST node, docstring) for every module, class and function docstring of the standard library
    longer than 80 characters, in file order."""
    for f in _stdlib_files():
        try:
            tree = ast.parse(f.read_text(errors="ignore"))
        except SyntaxError:
            continue
        for node in [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]:
            doc = ast.get_docstring(node)
            if doc and len(doc) > 80:
                yield f.stem, node, doc


def prose_documents() -> list[str]:
    """Reference-manual topics (less the held-out ones), then every module, class and function docstring."""
    return reference_topics(held_out=False) + [doc for _, _, doc in _docstrings()]


def docstring_conversations() -> list[list[dict]]:
    """Every module, class and function docstring of the standard library as a one-turn conversation: a question
    about the name, the docstring as the answer. Distilling an instruct model on these keeps its chat turns in the
    data, so its students see the format they will be asked in."""
    conversations = []
    for module, node, doc in _docstrings():
        if isinstance(node, ast.Module):
            question = f"What is Python's `{module}` module for?"
        elif isinstance(node, ast.ClassDef):
            question = f"What is the `{node.name}` class in Python's `{module}` module?"
        else:
            question = f"What does `{node.name}` in Python's `{module}` module do?"
        conversations.append([{"role": "user", "content": question}, {"role": "assistant", "content": doc}])
    return conversations


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


def write_jsonl(path: Path, docs: list) -> None:
    """One record per document: {"text": ...}, or {"messages": [...]} for a conversation."""
    with path.open("w") as f:
        for doc in docs:
            f.write(json.dumps({"text": doc} if isinstance(doc, str) else {"messages": doc}) + "\n")


def write_stdlib_corpus(out: Path, overwrite: bool = False) -> dict:
    """The distillation data of a real teacher: reference-manual topics (less the held-out ones), docstrings as
    questions and answers (`docstring_conversations`, rendered by the teacher's chat template when tokenized)
    and the modules' sources (less the held-out ones), split by document into `train.jsonl`, `validation.jsonl` (1 in 20) and
    `calibration.jsonl` (1 in 20), so no document reaches two splits (compress/data.py reads such a folder as
    split). The split is by a hash of each document's text, stable wherever the text is the same; the text
    comes from this Python installation, so the record names its version and each file's sha256."""
    import hashlib
    import platform

    from compress.checkpoint import output_dir, write_record

    splits: dict[str, list] = {"train": [], "validation": [], "calibration": []}  # texts and conversations
    for doc in reference_topics(held_out=False) + docstring_conversations() + code_documents(held_out=False):
        bucket = zlib.crc32(json.dumps(doc).encode()) % 20
        splits["validation" if bucket == 0 else "calibration" if bucket == 1 else "train"].append(doc)
    with output_dir(out, overwrite=overwrite) as tmp:
        for name, docs in splits.items():
            write_jsonl(tmp / f"{name}.jsonl", docs)
        record = write_record(tmp, "data", source="the Python standard library: pydoc_data topics, docstrings, sources",
                              python=platform.python_version(),
                              splits={name: {"documents": len(docs), "characters": len(json.dumps(docs)),
                                             "sha256": hashlib.sha256((tmp / f"{name}.jsonl").read_bytes()).hexdigest()}
                                      for name, docs in splits.items()})
    log.info("stdlib corpus: %s -> %s", ", ".join(f"{len(d)} {n} documents" for n, d in splits.items()), out)
    return record


PRETRAIN_LR = 5e-3
"""Peak LR of the teacher's pretraining; teacher correction runs at one fifth of it, as in the paper."""


def pretrain_config(steps: int, seed: int, precision: str = "auto"):
    from compress.train import TrainConfig

    return TrainConfig(steps=steps, seq_len=256, global_batch=16, micro_batch=8, lr=PRETRAIN_LR, min_lr=1e-4,
                       warmup=max(1, steps // 20), kd=False, eval_every=max(1, steps // 5), save_every=steps,
                       seed=seed, precision=precision)


def build(out: Path, vocab_size: int = 2048, steps: int = 300, seed: int = 0, precision: str = "auto") -> Path:
    """Write the corpora, the tokenizer, a freshly initialised teacher (`teacher-init/`) and the teacher
    pretrained on the code corpus for `steps` steps (`teacher/`) under `out`."""
    from transformers import AutoModelForCausalLM

    from compress.checkpoint import output_dir, save_checkpoint
    from compress.train import fit

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
