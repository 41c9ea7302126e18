"""Benchmark suites as data: which lm-eval tasks, with which few-shot count, limit and headline metric.

    suite = load_suite("base")                 # evals/suites/base.yaml: the paper's Table 1
    suite = load_suite("my-suite.yaml")        # a user's own suite, same format

Shipped suites: `base` (Table 1), `instruct` (Table 2; MT-Bench and BFCLv2 listed as unsupported with the
reason), `fixtures` and `fixtures-code` (the same task logic on small datasets the project ships, offline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from minitron.core.errors import BadInput, MissingInput

SUITES_DIR = Path(__file__).resolve().parent / "suites"
PAPER_DIR = Path(__file__).resolve().parent / "paper"


@dataclass(frozen=True)
class SuiteTask:
    task: str
    """An lm-eval task name (built-in, or one of ours under evals/tasks/)."""
    num_fewshot: int = 0
    metric: str = "acc,none"
    """The headline result key, as lm-eval writes it: 'metric,filter'."""
    limit: float | None = None
    """A fraction (< 1) or a number of documents; the paper runs XL-Sum on 20% of its test set."""
    paper_row: str | None = None
    """The row of the paper's table this task fills."""
    average_of: tuple[str, ...] | None = None
    """Result keys whose mean is the headline `metric` (IFEval: the paper averages the prompt- and
    instruction-level, strict and loose accuracies); its stderr is the mean of theirs, an upper bound."""

    @property
    def builtin(self) -> bool:
        return not self.task.startswith("minitron_")


@dataclass(frozen=True)
class Unsupported:
    name: str
    reason: str
    paper_row: str | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[SuiteTask, ...]
    unsupported: tuple[Unsupported, ...] = field(default_factory=tuple)
    paper_table: str | None = None
    """A CSV under evals/paper/ whose columns are set beside this suite's results."""


def available() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name, or a YAML file; unknown names and fields are errors that list the options."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SUITES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise BadInput(f"unknown suite {name_or_path!r}; shipped suites: {', '.join(available())}, "
                             "or pass a suite YAML file")
    elif not path.is_file():
        raise MissingInput(f"no suite file at {path}")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"name", "tasks", "unsupported", "paper_table"}
    if unknown:
        raise BadInput(f"{path}: unknown field(s) {', '.join(sorted(unknown))}; allowed: name, tasks, "
                         "unsupported, paper_table")
    if not data.get("tasks"):
        raise BadInput(f"{path}: a suite needs a non-empty `tasks` list")
    try:
        tasks = tuple(SuiteTask(**{**t, **({"average_of": tuple(t["average_of"])} if t.get("average_of") else {})})
                      for t in data["tasks"])
        unsupported = tuple(Unsupported(**u) for u in data.get("unsupported") or [])
    except TypeError as err:
        raise BadInput(f"{path}: {err}; task fields: task, num_fewshot, metric, limit, paper_row, "
                       "average_of") from None
    names = [t.task for t in tasks]
    if len(set(names)) != len(names):
        raise BadInput(f"{path}: a task is listed twice")
    return Suite(name=data.get("name", path.stem), tasks=tasks, unsupported=unsupported,
                 paper_table=data.get("paper_table"))
