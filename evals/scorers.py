"""Downstream-accuracy scorers for the depth scan, by their `--metric` names.

    minitron prune depth --model DIR --calib DATA --out DIR --num-layers 16 --metric winogrande
    prune_depth(..., metric="winogrande", metric_scorer=depth_scorer("winogrande"))    # from Python

The scorer wraps the in-memory model once (lm-eval's HFLM over the model object) and evaluates it again for
every candidate block: the scan removes layers in place, so nothing is reloaded or copied.
"""

from __future__ import annotations

from minitron.core.errors import BadInput
from minitron.core.measure import Scorer, lm_loss_scorer
from minitron.evals.suites import Suite, SuiteTask


def task_scorer(task: str, metric: str = "acc,none", num_fewshot: int = 5, limit: int | None = None):
    """A factory of Scorers that run one lm-eval task on the model being scanned."""

    def factory(tokenizer=None, device: str = "cpu", **_context) -> Scorer:
        from minitron.evals.backends import hf_lm
        from minitron.evals.run import check_data, evaluate_suite

        suite = Suite(name=f"scan-{task}", tasks=(SuiteTask(task=task, num_fewshot=num_fewshot, metric=metric),))
        data = check_data(suite, data_dir=None)
        wrapped = {}

        def score(model) -> float:
            if "lm" not in wrapped:  # one HFLM for the whole scan, around the one model object
                wrapped["lm"] = hf_lm(model, tokenizer=tokenizer, device=device)
            results = evaluate_suite(wrapped["lm"], suite, limit=limit, data=data)
            return float(results["results"][task][metric])

        return Scorer(task.removeprefix("minitron_"), score, higher_is_better=True)

    return factory


SCORERS = {
    "lm-loss": lm_loss_scorer,
    "winogrande": task_scorer("winogrande"),
    "fixture-winogrande": task_scorer("minitron_fixture_winogrande"),
    "stdlib-cloze": task_scorer("minitron_stdlib_cloze", metric="acc_norm,none", num_fewshot=0),
    "stdlib-next-line": task_scorer("minitron_stdlib_next_line", metric="acc_norm,none", num_fewshot=0),
}
"""`--metric` names -> factories called with batches=, tokenizer=, device= (the depth scan's context)."""


def depth_scorer(metric: str):
    """The scorer factory of a `--metric` name; a clear error naming the choices for any other name."""
    if metric not in SCORERS:
        raise BadInput(f"--metric {metric!r} is unknown; choose from {', '.join(SCORERS)}")
    return SCORERS[metric]


def suite_comparison(suite_name: str, device: str = "cpu"):
    """`compare_models` for `minitron.deploy.quantize`: the suite's headline metrics of the reference and the
    fake-quantized model, both in memory, through lm-eval's HF backend."""
    from minitron.evals.backends import hf_lm
    from minitron.evals.run import check_data, evaluate_suite
    from minitron.evals.suites import load_suite

    suite = load_suite(suite_name)
    data = check_data(suite, data_dir=None)  # before calibration, so a missing dataset fails in seconds

    def compare(reference, quantized, tokenizer) -> dict:
        scores = {}
        for name, model in (("reference", reference), ("fp8", quantized)):
            results = evaluate_suite(hf_lm(model, tokenizer=tokenizer, device=device), suite, data=data)
            scores[name] = {t.task: results["results"][t.task][t.metric] for t in suite.tasks}
        return {"suite": suite.name, **scores}

    return compare
