"""`minitron_stdlib_next_line`: which of four lines comes next in standard-library code the model never saw.

    python -m minitron.evals.stdlib_next_line      # regenerate evals/fixtures/stdlib_next_line/validation.jsonl

The stdlib cloze task (evals/stdlib_cloze.py) is prose, and SmolLM2-135M gets all of it right, so it cannot
tell the teacher from its corrected self. This one is code: a tenth of the standard library's modules, chosen by
name (`minitron.core.stdlib_corpus.is_held_out_module`), are kept out of the stdlib corpus, and each item is a point in
one of them: the lines before a one-line statement as context, the statement as the true choice, and three other
one-line statements of the same module at the same indentation as distractors. Scored by the log-likelihood of
each line (chance 25%). The model's pretraining may well have seen CPython; the comparisons that matter are
between the teacher and students that all share that.
"""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "stdlib_next_line" / "validation.jsonl"
CONTEXT_LINES = 6
MIN_CHARS, MAX_CHARS = 24, 90
"""A statement short enough to be one thought, long enough that its choices differ in more than a name."""


def statement_lines(source: str) -> list[int]:
    """0-based indices of the lines that hold one whole statement (no docstrings, no compound headers)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines()
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt) or node.end_lineno != node.lineno:
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # a docstring or a bare string
            continue
        text = lines[node.lineno - 1].strip()
        if MIN_CHARS <= len(text) <= MAX_CHARS and not text.startswith("#"):
            found.add(node.lineno - 1)
    return sorted(found)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def next_line_items(sources: list[str], per_module: int = 18, seed: int = 0) -> list[dict]:
    """Up to `per_module` items from each source, spread evenly over its one-line statements."""
    rng = random.Random(seed)
    items = []
    for source in sources:
        lines = source.splitlines()
        candidates = [i for i in statement_lines(source) if i >= CONTEXT_LINES]
        for i in candidates[::max(1, len(candidates) // per_module)][:per_module]:
            true = lines[i]
            pool = sorted({lines[j].strip() for j in candidates if _indent(lines[j]) == _indent(true)}
                          - {true.strip()})
            if len(pool) < 3:
                continue
            choices = [true] + [" " * _indent(true) + text for text in rng.sample(pool, 3)]
            rng.shuffle(choices)
            items.append({"context": "\n".join(lines[i - CONTEXT_LINES:i]) + "\n", "choices": choices,
                          "label": choices.index(true)})
    return items


def main() -> None:
    from minitron.core.stdlib_corpus import code_documents, prose_documents

    seen = "\n".join(code_documents(held_out=False) + prose_documents())  # what the stdlib corpus trains on
    # a held-out module can share code with one that is not (gzip, bz2 and lzma open files alike): such an item
    # would test memory of the training data, so it is left out
    items = [item for item in next_line_items(code_documents(held_out=True)) if item["context"] not in seen]
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text("".join(json.dumps(item) + "\n" for item in items))
    print(f"wrote {len(items)} items to {FIXTURE}")


if __name__ == "__main__":
    main()
