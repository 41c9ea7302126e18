"""Run a suite through lm-eval and keep everything: results, per-sample records, provenance.

    minitron eval run --model DIR --suite fixtures --out results/evals/NAME/fixtures

A run folder holds `results.json` (lm-eval's results, configs, n-shot, higher_is_better), `samples/<task>.jsonl`
(one record per document: doc_hash, prompt_hash, the per-document metrics; what the gate pairs on) and
`minitron.json` (suite, model, backend, limits, versions, git sha). lm-eval takes one few-shot count and one
limit per call, so tasks are run in groups that share them, with the model loaded once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from minitron.core.errors import BadInput, MissingInput
from minitron.core.records import output_dir, write_record
from minitron.evals.code_exec import ALLOW_ENV
from minitron.evals.sandbox import isolation
from minitron.evals.suites import Suite, SuiteTask
from minitron.evals.tasks import TASKS_DIR, task_manager

log = logging.getLogger(__name__)


class _ExpectedNotices(logging.Filter):
    """Drops lm-eval's warnings about what this project does on purpose (setting every task's few-shot count
    from the suite, and passing a model object for the in-memory backend): dozens of lines per run otherwise."""

    EXPECTED = ("Overwriting default num_fewshot", "Passed an already-initialized model",
                "`pretrained` model kwarg is not of type")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.EXPECTED)


@contextlib.contextmanager
def _quiet_expected_notices():
    """`_ExpectedNotices` on lm-eval's loggers for the length of one evaluation, not for the process."""
    loggers = [logging.getLogger(name) for name in ("lm_eval.evaluator", "lm_eval.models.huggingface")]
    notices = _ExpectedNotices()
    for logger in loggers:
        logger.addFilter(notices)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(notices)


@contextlib.contextmanager
def _environ(**values: str):
    """Environment variables set for the block and restored after it (as they were, or unset)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class DataUnavailable(MissingInput):
    """A task's dataset is neither cached here nor reachable."""


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers; decided once, in seconds, instead of per-dataset retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class DataAccess:
    """How an evaluation reaches its datasets, decided once by `check_data`: from the hub, or offline (from a
    datasets cache `data_dir`, or with nothing to fetch), so that no library waits on the network."""

    offline: bool = False
    data_dir: Path | None = None

    @contextlib.contextmanager
    def scope(self):
        """For the block: offline when decided so, and reading (or filling) the datasets cache `data_dir` when
        given; the environment and, where already imported, the libraries' own flags are restored after it."""
        import sys

        env, flags = {}, []
        if self.offline:
            env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
            flags += [("datasets.config", "HF_HUB_OFFLINE", True),
                      ("huggingface_hub.constants", "HF_HUB_OFFLINE", True)]
        if self.data_dir is not None:
            env["HF_DATASETS_CACHE"] = str(self.data_dir)
            flags.append(("datasets.config", "HF_DATASETS_CACHE", self.data_dir))
        # a library imported inside the block reads the environment; one imported before has its flags set here
        # and restored after
        flags = [(sys.modules[name], attr, value) for name, attr, value in flags if name in sys.modules]
        before = [(module, attr, getattr(module, attr)) for module, attr, _ in flags]
        with _environ(**env):
            for module, attr, value in flags:
                setattr(module, attr, value)
            try:
                yield
            finally:
                for module, attr, value in before:
                    setattr(module, attr, value)


def fetch_datasets(suite: Suite, data_dir: str | Path) -> None:
    """Download `suite`'s datasets into the datasets cache `data_dir` (needs the hub), for offline machines."""
    from lm_eval.tasks import get_task_dict

    if not hub_reachable():
        raise MissingInput("the Hugging Face hub is not reachable from here; run `minitron eval fetch` on a machine "
                           "with network access, then copy --data-dir over")
    with DataAccess(data_dir=Path(data_dir).resolve()).scope():
        for task in suite.tasks:  # building a task downloads its dataset into the cache
            get_task_dict([task.task], task_manager(include_defaults=task.builtin))


def _with_includes(path: Path, seen: frozenset = frozenset()) -> str:
    """A task config's text with the configs it `include:`s (lm-eval's inheritance), which may say where its
    data comes from."""
    text = path.read_text()
    for line in text.splitlines():
        if line.startswith("include:"):
            included = (path.parent / line.split(":", 1)[1].strip()).resolve()
            if included.is_file() and included not in seen:
                text += "\n" + _with_includes(included, seen | {included})
    return text


def needs_hub(task: SuiteTask) -> bool:
    """Built-in lm-eval tasks and ours with a hub `dataset_path` read the hub; fixtures and HumanEval do not."""
    if task.builtin:
        return True
    for path in TASKS_DIR.rglob("*.yaml"):
        if f"task: {task.task}\n" in path.read_text():
            text = _with_includes(path)
            local = "dataset_path: json" in text or "custom_dataset:" in text
            return not local
    raise BadInput(f"unknown task {task.task!r}: no lm-eval config for it under {TASKS_DIR}")


def check_data(suite: Suite, data_dir: str | Path | None) -> DataAccess:
    """Fail in seconds, naming the tasks and the fix, when their datasets cannot be had; else how to reach them
    (pass it to `evaluate_suite`)."""
    hub_tasks = [t.task for t in suite.tasks if needs_hub(t)]
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataUnavailable(f"--data-dir {data_dir} does not exist")
        return DataAccess(offline=True, data_dir=Path(data_dir).resolve())
    if hub_tasks and not hub_reachable():
        raise DataUnavailable(
            f"tasks {', '.join(hub_tasks)} read their datasets from the Hugging Face hub, which is not reachable "
            f"from here; pass --data-dir DIR with a datasets cache made where the hub is reachable "
            f"(`minitron eval fetch --suite {suite.name} --data-dir DIR`), or run --suite fixtures")
    return DataAccess(offline=not hub_tasks)  # nothing to fetch: never let a library wait on the network


def _effective_limit(task: SuiteTask, limit: int | None):
    if limit is None:
        return task.limit
    if task.limit is None:
        return limit
    return min(limit, task.limit) if task.limit >= 1 else limit  # a fraction of a capped run is the cap


def evaluate_suite(lm, suite: Suite, limit: int | None = None, allow_code_execution: bool = False,
                   seed: int = 1234, data: DataAccess | None = None) -> dict:
    """lm-eval over every task of `suite` with `lm`; returns one merged lm-eval result (with samples). `data`
    is `check_data`'s decision (offline or not); `allow_code_execution` lets the code tasks run generated programs
    during this call only."""
    code_opt_in = {ALLOW_ENV: "1"} if allow_code_execution else {}
    with (data or DataAccess()).scope(), _environ(**code_opt_in), _quiet_expected_notices():
        return _evaluate(lm, suite, limit, allow_code_execution, seed)


def _fit_generation(tasks: dict, lm) -> dict[str, str]:
    """Give a generation task whose answer budget fills the model's whole context (a 256-token model and a
    256-token budget) half the context instead, so a prompt fits; returns what was capped, for the results."""
    capped = {}
    context = getattr(lm, "max_length", None)
    for name, task in tasks.items():
        if getattr(task, "OUTPUT_TYPE", None) != "generate_until" or not context:
            continue
        kwargs = task.config.generation_kwargs
        if kwargs is None:
            kwargs = task.config.generation_kwargs = {}
        budget = kwargs.get("max_gen_toks", getattr(lm, "max_gen_toks", 256))
        if budget >= context:
            kwargs["max_gen_toks"] = context // 2
            capped[name] = f"max_gen_toks {budget} -> {context // 2}: the model's context is {context} tokens"
            log.warning("%s: answers capped at %d tokens (the task asks %d; the model holds %d in all)", name,
                        context // 2, budget, context)
    return capped


def _evaluate(lm, suite: Suite, limit: int | None, allow_code_execution: bool, seed: int) -> dict:
    import lm_eval
    from lm_eval.tasks import get_task_dict

    groups: dict[tuple, list[str]] = defaultdict(list)
    for task in suite.tasks:
        groups[(task.num_fewshot, _effective_limit(task, limit))].append(task.task)
    manager = task_manager(include_defaults=any(t.builtin for t in suite.tasks))
    merged: dict = defaultdict(dict)
    for (shots, group_limit), names in groups.items():
        try:
            tasks = get_task_dict(names, manager)
            capped = _fit_generation(tasks, lm)
            if capped:
                merged["generation_capped"].update(capped)
            out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks.values()), num_fewshot=shots, limit=group_limit,
                                          task_manager=manager, log_samples=True, random_seed=seed,
                                          numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                                          confirm_run_unsafe_code=allow_code_execution)
        except Exception as err:  # datasets and the hub client raise many types; their messages say offline
            if "offline" in str(err).lower() or "connect" in str(err).lower() or "doesn't exist" in str(err):
                raise DataUnavailable(f"tasks {', '.join(names)}: dataset not available ({err}); prepare a "
                                      f"datasets cache with `minitron eval fetch --suite {suite.name} "
                                      "--data-dir DIR` where the hub is reachable, then pass --data-dir DIR") from None
            raise
        for key in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "samples",
                    "group_subtasks"):
            merged[key].update(out.get(key) or {})
    missing = [t.task for t in suite.tasks if t.task not in merged["results"]]
    if missing:
        raise RuntimeError(f"lm-eval returned no results for {', '.join(missing)}")
    for task in suite.tasks:
        if task.average_of:
            _average(merged["results"][task.task], task)
    return dict(merged)


def _average(results: dict, task) -> None:
    """The headline metric as the mean of `task.average_of`, beside them in the task's results."""
    name, _, filter_name = task.metric.partition(",")
    parts = [results[key] for key in task.average_of]
    errors = [results.get(key.replace(",", "_stderr,", 1)) for key in task.average_of]
    results[task.metric] = sum(parts) / len(parts)
    if all(isinstance(e, (int, float)) for e in errors):
        results[f"{name}_stderr,{filter_name}"] = sum(errors) / len(errors)


def code_tasks(suite: Suite) -> list[str]:
    """The suite's tasks that run model-generated programs."""
    return [t.task for t in suite.tasks if any(k in t.task for k in ("humaneval", "mbpp"))]


def check_code_execution(suite: Suite, allow: bool) -> None:
    """Code tasks run generated programs: refuse them up front unless --allow-code-execution was given."""
    if code_tasks(suite) and not allow:
        raise BadInput(f"tasks {', '.join(code_tasks(suite))} execute model-generated code; pass "
                         "--allow-code-execution to run them (each program runs in its own sandboxed subprocess)")


def write_run(out: str | Path, results: dict, suite: Suite, model: str, backend: str, overwrite: bool = False,
              **fields) -> Path:
    """The run folder, written atomically: results.json, samples/<task>.jsonl, minitron.json."""
    from lm_eval.utils import handle_non_serializable

    samples = results.pop("samples", {})
    with output_dir(out, overwrite) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=handle_non_serializable) + "\n")
        (tmp / "samples").mkdir()
        for task, records in samples.items():
            with (tmp / "samples" / f"{task}.jsonl").open("w") as f:
                for record in records:
                    f.write(json.dumps(record, default=handle_non_serializable) + "\n")
        write_record(tmp, "eval", suite=suite.name, suite_tasks=[t.__dict__ for t in suite.tasks],
                     unsupported=[u.__dict__ for u in suite.unsupported], paper_table=suite.paper_table,
                     model=str(model), backend=backend,
                     headline={t.task: results["results"][t.task].get(t.metric) for t in suite.tasks},
                     **({"code_execution": isolation().describe()} if code_tasks(suite) else {}), **fields)
    return Path(out)
