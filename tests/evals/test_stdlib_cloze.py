"""The in-domain eval task: well-formed items from text that no training corpus of the embedded default holds."""

import json

from minitron.core.stdlib_corpus import code_documents, prose_documents, reference_topics
from minitron.evals.stdlib_cloze import ENDING_WORDS, FIXTURE, cloze_items


def test_items_hold_the_true_ending_and_three_two_word_swaps():
    items = cloze_items(reference_topics(held_out=True))
    assert len(items) >= 100
    for item in items:
        truth = item["choices"][item["label"]].split()
        assert len(item["choices"]) == len(set(item["choices"])) == 4 and len(truth) == ENDING_WORDS
        for i, choice in enumerate(item["choices"]):
            words = choice.split()
            assert sorted(words) == sorted(truth)
            if i != item["label"]:
                assert sum(a != b for a, b in zip(words, truth)) == 2  # exactly one swap of two different words


def test_the_shipped_items_are_in_no_training_corpus():
    corpus = "\n".join(prose_documents() + code_documents())
    items = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    assert len(items) >= 100
    leaked = [item["context"][:60] for item in items if item["context"][-80:] in " ".join(corpus.split())]
    assert not leaked, leaked[:3]
    assert len(reference_topics(held_out=True)) < len(reference_topics(held_out=False))
