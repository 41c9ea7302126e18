"""lm-eval language models for tests, with no neural network inside.

- `OracleLM` answers every request from the task's gold data, so a task scores its maximum: it checks that a
  task's prompts, targets, filters and metrics fit together end to end.
- `ConstantLM` gives every continuation the same log-likelihood and always generates the same text, so on a
  multiple-choice task it always picks the first choice: with gold answers spread evenly over the positions it
  scores at chance.
"""

from __future__ import annotations

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM

# A false continuation's log-likelihood for OracleLM: probability e^-20, far below the gold's e^0.
FALSE_LOGLIKELIHOOD = -20.0

# Generation tasks' reference fields, in order: HumanEval, MBPP, GSM8K (worked answer ending in "#### N"), XL-Sum.
GOLD_TEXT_FIELDS = ("canonical_solution", "code", "answer", "summary")


class OracleLM(LM):
    """Knows the gold answer of every request.

    Multiple choice: the gold choice (or every true answer of truthfulqa mc2) gets log-likelihood 0 and is
    greedy, the other choices get -20. Generation: the doc's reference text from the first of
    `GOLD_TEXT_FIELDS` it has, else the task's own target text.

    Finding the gold choice needs the task's config (doc_to_target, doc_to_choice): tasks are built through
    `task_manager` (default: `evals.tasks.task_manager()`) when first needed, or up front for `task_names`.
    They only interpret the docs that lm-eval passes with each request, which are already processed (GPQA
    shuffles its answers in process_docs), so the oracle never relies on its own copy of a dataset.
    """

    def __init__(self, task_manager=None, task_names=()):
        super().__init__()
        if task_manager is None:
            from minitron.evals.tasks import task_manager as ours

            task_manager = ours(include_defaults=False)
        self.task_manager = task_manager
        self.tasks = task_manager.load(list(task_names))["tasks"] if task_names else {}

    def _task(self, name: str):
        if name not in self.tasks:
            self.tasks.update(self.task_manager.load([name])["tasks"])
        return self.tasks[name]

    def _gold_choices(self, task, doc: dict) -> set[int]:
        choices = task.doc_to_choice(doc)
        mc2 = doc.get("mc2_targets")
        if mc2 is not None and list(mc2["choices"]) == list(choices):
            return {i for i, label in enumerate(mc2["labels"]) if label == 1}
        # As lm-eval's ConfigurableTask.process_results finds the gold: winogrande-style tasks vary the context
        # and give the gold index through doc_to_text; a string target names the gold choice.
        gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
        golds = gold if isinstance(gold, list) else [gold]
        return {choices.index(g) if isinstance(g, str) else g for g in golds}

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        out = []
        for request in requests:
            task = self._task(request.task_name)
            if task.OUTPUT_TYPE != "multiple_choice" or request.idx in self._gold_choices(task, request.doc):
                out.append((0.0, True))  # a single-continuation task's continuation is the gold one
            else:
                out.append((FALSE_LOGLIKELIHOOD, False))
        return out

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        return [0.0 for _ in requests]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        return [self._gold_text(request) for request in requests]

    def _gold_text(self, request: Instance) -> str:
        doc = request.doc
        for field in GOLD_TEXT_FIELDS:
            if isinstance(doc.get(field), str):
                return doc[field]
        target = self._task(request.task_name).doc_to_target(doc)
        if not isinstance(target, str):
            raise ValueError(f"OracleLM has no gold text for a doc of {request.task_name}")
        return target


class ConstantLM(LM):
    """The same generation for every prompt and the same log-likelihood for every continuation."""

    def __init__(self, generation: str = "0", loglikelihood: float = 0.0):
        super().__init__()
        self.generation = generation
        self.value = loglikelihood

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        return [(self.value, False) for _ in requests]

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        return [self.value for _ in requests]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        return [self.generation for _ in requests]
