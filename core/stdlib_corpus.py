"""The standard library as data: text every machine with Python has, split so that evaluation never sees training.

    from minitron.core.stdlib_corpus import write_stdlib_corpus
    write_stdlib_corpus(Path("work/smollm2/data"))    # train / validation / calibration JSONL, by document

What it holds: the reference manual (`pydoc_data.topics`), every module, class and function docstring (as text and
as one-turn conversations), and the modules' sources. Held out of every corpus, by a hash of the name so the
choice is stable across Python versions: a fifth of the manual's topics (the cloze task, evals/stdlib_cloze.py)
and a tenth of the modules (the next-line task, evals/stdlib_next_line.py). Used by `data: stdlib` recipes, by
the embedded tiny teacher (compress/embedded.py) and by the evals that build their items from it.
"""

from __future__ import annotations

import ast
import json
import logging
import sysconfig
import zlib
from pathlib import Path

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

    from minitron.core.records import output_dir, write_record

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
