"""`minitron_stdlib_cloze`: an accuracy task the embedded default can actually do, from text it never saw.

    python -m minitron.evals.stdlib_cloze          # regenerate evals/fixtures/stdlib_cloze/validation.jsonl

The paper's benchmarks sit at chance for a 2M-parameter model, so the depth scan's "downstream accuracy"
(Figure 9) and the tiny eval table need a task in the embedded default's own domain. Each item is a point in
a paragraph of a held-out topic of the Python reference manual (`minitron.core.stdlib_corpus.is_held_out`) that no
training corpus contains, cut into a context and its true ending; each wrong choice is the ending with two of
its words swapped, so the task asks for word order in context (BLiMP-like). That is within reach of a small
model: with the endings of other paragraphs as distractors it sat at chance, with fully shuffled endings
near 95%. Scored like HellaSwag (the log-likelihood of each choice), so chance is 25%; all four choices hold
the same words, so `acc` and `acc_norm` agree up to tokenization.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "stdlib_cloze" / "validation.jsonl"
ENDING_WORDS = 12
"""Words in each ending: long enough to carry meaning, short enough that every choice is about as long."""
MIN_CONTEXT_WORDS = 18


def paragraphs(topics: list[str], min_words: int = 30, seen: str = "") -> list[list[str]]:
    """Prose paragraphs (not indented code or tables) of at least `min_words` words, as word lists, less any
    found in `seen` (whitespace-normalised training text: reference topics repeat each other's sections)."""
    found = []
    for topic in topics:
        for block in topic.split("\n\n"):
            lines = block.splitlines()
            if not lines or lines[0].startswith("   ") or "|" in block or "===" in block:
                continue
            words = " ".join(line.strip() for line in lines).split()
            if len(words) >= min_words and " ".join(words) not in seen:
                found.append(words)
    return found


def cloze_items(topics: list[str], seen: str = "", seed: int = 0, max_context_words: int = 48, stride: int = 16
                ) -> list[dict]:
    """Items every `stride` words of each paragraph, back from its end: the ENDING_WORDS words there, the
    words before them as context, and three copies of the ending with two of its words swapped."""
    rng = random.Random(seed)
    items = []
    for words in paragraphs(topics, seen=seen):
        for end in range(len(words), ENDING_WORDS + MIN_CONTEXT_WORDS - 1, -stride):
            ending = words[end - ENDING_WORDS:end]
            choices = [" ".join(ending)]
            while len(choices) < 4:
                i, j = rng.sample(range(len(ending)), 2)
                swapped = list(ending)
                swapped[i], swapped[j] = swapped[j], swapped[i]
                if " ".join(swapped) not in choices:
                    choices.append(" ".join(swapped))
            rng.shuffle(choices)
            context = " ".join(words[:end - ENDING_WORDS][-max_context_words:])
            items.append({"context": re.sub(r"\s+", " ", context), "choices": choices,
                          "label": choices.index(" ".join(ending))})
    return items


def main() -> None:
    from minitron.core.stdlib_corpus import code_documents, prose_documents, reference_topics

    seen = " ".join(" ".join(prose_documents() + code_documents()).split())
    items = cloze_items(reference_topics(held_out=True), seen=seen)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text("".join(json.dumps(item) + "\n" for item in items))
    print(f"wrote {len(items)} items to {FIXTURE}")


if __name__ == "__main__":
    main()
