"""The in-domain code task: the true next line of a module that the stdlib corpus leaves out, among three others."""

import json

from minitron.core.stdlib_corpus import code_documents, write_stdlib_corpus
from minitron.evals.stdlib_next_line import CONTEXT_LINES, FIXTURE, next_line_items, statement_lines


def test_only_whole_one_line_statements_are_asked_for():
    source = 'def f(x):\n    """A docstring long enough to count."""\n    total_value = compute(x) + 1\n' \
             '    if total_value:\n        return total_value * 2 + 10\n    call_something(\n        x)\n'
    assert statement_lines(source) == [2, 4]  # not the def, the docstring, the if header or the two-line call
    assert statement_lines("def broken(:\n") == []


def test_items_hold_the_line_that_follows_their_context_and_three_others_at_its_indentation():
    sources = code_documents(held_out=True)
    items = next_line_items(sources)
    assert len(items) >= 250
    for item in items:
        truth = item["choices"][item["label"]]
        assert len(set(item["choices"])) == 4 and item["context"].count("\n") == CONTEXT_LINES
        assert any(item["context"] + truth + "\n" in source for source in sources)
        indent = len(truth) - len(truth.lstrip())
        assert all(len(choice) - len(choice.lstrip()) == indent for choice in item["choices"])


def test_the_shipped_items_come_from_modules_the_stdlib_corpus_leaves_out(tmp_path):
    write_stdlib_corpus(tmp_path / "corpus")
    corpus = "".join((tmp_path / "corpus" / f"{split}.jsonl").read_text()
                     for split in ("train", "validation", "calibration"))
    items = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    assert len(items) >= 300  # a 7-point gap between two models is then about 3 standard errors, not 2
    leaked = [item["context"] for item in items if json.dumps(item["context"])[1:-1] in corpus]
    assert not leaked, leaked[:2]
    assert len(code_documents(held_out=True)) < len(code_documents(held_out=False)) / 5
