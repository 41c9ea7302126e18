"""Downstream-accuracy scorers for the depth scan, registered under `--metric` names in compress.depth.

    minitron prune depth --model DIR --calib DATA --out DIR --num-layers 16 --metric winogrande

The scorer wraps the in-memory model once (lm-eval's HFLM over the model object) and evaluates it again for
every candidate block: the scan removes layers in place, so nothing is reloaded or copied.
"""

from __future__ import annotations

from compress.depth import SCORERS, Scorer
from evals.suites import Suite, SuiteTask


def task_scorer(task: str, metric: str = "acc,none", num_fewshot: int = 5, limit: int | None = None):
    """A factory of Scorers that run one lm-eval task on the model being scanned."""

    def factory(tokenizer=None, device: str = "cpu", **_context) -> Scorer:
        from evals.backends import hf_lm
        from evals.run import check_data, evaluate_suite

        suite = Suite(name=f"scan-{task}", tasks=(SuiteTask(task=task, num_fewshot=num_fewshot, metric=metric),))
        check_data(suite, data_dir=None)
        wrapped = {}

        def score(model) -> float:
            if "lm" not in wrapped:  # one HFLM for the whole scan, around the one model object
                wrapped["lm"] = hf_lm(model, tokenizer=tokenizer, device=device)
            results = evaluate_suite(wrapped["lm"], suite, limit=limit)
            return float(results["results"][task][metric])

        return Scorer(task.removeprefix("minitron_"), score, higher_is_better=True)

    return factory


SCORERS["winogrande"] = task_scorer("winogrande")
SCORERS["fixture-winogrande"] = task_scorer("minitron_fixture_winogrande")
SCORERS["stdlib-cloze"] = task_scorer("minitron_stdlib_cloze", metric="acc_norm,none", num_fewshot=0)
SCORERS["stdlib-next-line"] = task_scorer("minitron_stdlib_next_line", metric="acc_norm,none", num_fewshot=0)
