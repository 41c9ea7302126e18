"""Per-article ROUGE for the XL-Sum task: F-measures of ROUGE-1, ROUGE-2 and ROUGE-L between the generated
summary and the reference, with the `rouge_score` package (Porter stemming, its default English tokenisation),
as the XL-Sum authors score English. Scores are in [0, 1]; lm-eval averages them over articles."""

from __future__ import annotations

from functools import lru_cache

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval hook: `results` holds the one generation for `doc`."""
    scores = _scorer().score(doc["summary"], results[0].strip())
    return {name: scores[name].fmeasure for name in ROUGE_TYPES}
