"""The code-execution sandbox (evals/code_exec.py) and the HumanEval/MBPP task configs (evals/tasks/code/).

Models with known answers stand in for neural networks: the oracle answers with the reference solutions and
must score pass@1 = 1 (which checks prompts, targets, filters and the metric end to end, on all 164 real
HumanEval problems), a constant model must score 0. Everything runs offline.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import lm_eval
import pytest
from lm_eval.api.model import LM
from minitron.evals import code_exec
from minitron.evals.code_exec import CodeExecutionNotAllowed, pass_at_k, run_many, run_program
from minitron.evals.tasks import task_manager

CODE_TASKS = ["minitron_humaneval", "minitron_humaneval_n20", "minitron_mbpp", "minitron_mbpp_n20",
              "minitron_fixture_humaneval", "minitron_fixture_mbpp"]
KEY = "pass@1,create_test"


class GenerationOnlyLM(LM):
    """Code tasks only generate: a request for log-likelihoods would be a wiring mistake."""

    def loglikelihood(self, requests):
        raise NotImplementedError("code tasks only generate")

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError("code tasks only generate")


class CodeOracleLM(GenerationOnlyLM):
    """Answers with the dataset's reference solution: HumanEval's `canonical_solution` (the body that
    continues the prompt), MBPP's `code` (a whole program). lm-eval hands each request its document
    (`Instance.doc`), and with `repeats: n` the same request n times in a row."""

    def generate_until(self, requests):
        return [r.doc["canonical_solution"] if "canonical_solution" in r.doc else r.doc["code"] for r in requests]


class ConstantTextLM(GenerationOnlyLM):
    """Answers every request with the same text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def generate_until(self, requests):
        return [self.text for _ in requests]


@pytest.fixture(autouse=True)
def offline_and_allowed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv(code_exec.ALLOW_ENV, "1")


def evaluate(model, task: str, **kw) -> dict:
    return lm_eval.simple_evaluate(model=model, tasks=[task], task_manager=task_manager(include_defaults=False),
                                   confirm_run_unsafe_code=True, log_samples=True, **kw)


def unique(program: str) -> str:
    """A program no other test has run, so the result cache of run_many cannot answer for it."""
    return f"# {uuid.uuid4()}\n{program}"


# --- sandbox ---------------------------------------------------------------------------------------------

def test_passing_and_failing_programs():
    assert run_program("assert sum([1, 2]) == 3") == code_exec.ExecResult(True, "passed", "")
    failed = run_program("def f():\n    return 1\nassert f() == 2")
    assert (failed.passed, failed.status) == (False, "failed")
    assert "AssertionError" in failed.detail


def test_isolated_interpreter_and_minimal_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:1")
    result = run_program("import os, sys\nassert sys.flags.isolated and sys.dont_write_bytecode\n"
                         "assert 'HTTPS_PROXY' not in os.environ and os.environ['HOME'] == os.getcwd()")
    assert result.passed, result.detail


@pytest.mark.parametrize("program", ["while True:\n    pass", "import time\ntime.sleep(60)"],
                         ids=["busy", "sleeping"])
def test_timeout_returns_fast(program):
    start = time.monotonic()
    result = run_program(program, timeout=1)
    assert (result.passed, result.status) == (False, "timeout")
    assert time.monotonic() - start < 5


def test_children_left_behind_are_killed():
    marker = f"{time.time_ns() % 10**6 + 60}.75"  # a sleep length no other process uses
    assert run_program(f"import os\nif os.fork() == 0:\n    os.execvp('sleep', ['sleep', '{marker}'])\n").passed
    deadline = time.monotonic() + 5
    while _sleeping(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sleeping(marker)


def _sleeping(marker: str) -> bool:
    """Whether a live (not zombie) `sleep MARKER` runs on this machine."""
    import subprocess

    ps = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True).stdout.splitlines()
    return any(line.split(None, 1)[1:] == [f"sleep {marker}"] and not line.startswith("Z") for line in ps)


@pytest.mark.parametrize("program", [
    "import mmap\nmaps = [mmap.mmap(-1, 2**28) for _ in range(64)]",  # 16 GiB reserved, none touched
    "x = b'x' * 2**33",
], ids=["growing", "one-shot"])
def test_memory_bomb_is_stopped(program):
    start = time.monotonic()
    result = run_program(program)
    assert not result.passed and result.status in ("failed", "error")
    assert "MemoryError" in result.detail or "Cannot allocate memory" in result.detail
    assert time.monotonic() - start < 5


def test_temporary_folder_is_removed():
    result = run_program("import os\nopen('left.txt', 'w').write('x')\nraise SystemExit(os.getcwd())")
    folder = Path(result.detail)  # its working folder, inside the run's temporary folder
    assert any(part.startswith("minitron-exec-") for part in folder.parts) and not folder.exists()


def test_refused_without_opt_in(monkeypatch):
    cached = unique("assert True")
    assert run_many([cached])[0].passed
    monkeypatch.delenv(code_exec.ALLOW_ENV)
    for call in (lambda: run_program("assert True"), lambda: run_many([cached])):
        with pytest.raises(CodeExecutionNotAllowed, match="--allow-code-execution"):
            call()


def test_run_many_executes_each_distinct_program_once(monkeypatch):
    calls = []
    original = code_exec.run_program
    monkeypatch.setattr(code_exec, "run_program", lambda p, t: calls.append(p) or original(p, t))
    good, bad = unique("assert True"), unique("assert False")
    results = run_many([good, bad, good, good], workers=2)
    assert [r.passed for r in results] == [True, False, True, True]
    assert sorted(calls) == sorted([good, bad])
    run_many([bad, good])
    assert len(calls) == 2  # cached


def test_pass_at_k_hand_values():
    assert pass_at_k(20, 5, 1) == pytest.approx(0.25)
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)  # the product form stays finite at large n
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


# --- lm-eval tasks ---------------------------------------------------------------------------------------

def test_code_tasks_are_indexed():
    assert set(CODE_TASKS) <= set(task_manager(include_defaults=False).all_tasks)


def test_oracle_scores_one_on_all_164_humaneval_problems():
    out = evaluate(CodeOracleLM(), "minitron_humaneval")
    result = out["results"]["minitron_humaneval"]
    assert result["sample_len"] == 164
    assert result[KEY] == 1.0


@pytest.mark.parametrize("task", ["minitron_fixture_humaneval", "minitron_fixture_mbpp"])
def test_oracle_scores_one_on_fixture_tasks(task):
    out = evaluate(CodeOracleLM(), task)
    assert out["results"][task]["sample_len"] == 10
    assert out["results"][task][KEY] == 1.0
    assert all(s["pass@1"] == 1.0 and s["filter"] == "create_test" for s in out["samples"][task])


class FencedOracleLM(CodeOracleLM):
    """The MBPP reference, wrapped the way chat models answer: Markdown fence, then prose."""

    def generate_until(self, requests):
        return [f"Sure!\n```python\n{code}\n```\nThis works because ..." for code in super().generate_until(requests)]


def test_mbpp_unwraps_fenced_code():
    assert evaluate(FencedOracleLM(), "minitron_fixture_mbpp")["results"]["minitron_fixture_mbpp"][KEY] == 1.0


@pytest.mark.parametrize("task, text", [("minitron_fixture_humaneval", "    pass\n"),
                                        ("minitron_fixture_mbpp", "")])
def test_constant_model_scores_zero(task, text):
    assert evaluate(ConstantTextLM(text), task)["results"][task][KEY] == 0.0


class FiveOfTwentyLM(CodeOracleLM):
    """Right in the first 5 of the 20 samples of each problem, wrong in the other 15."""

    def generate_until(self, requests):
        seen: dict[int, int] = {}
        answers = []
        for request, gold in zip(requests, super().generate_until(requests)):
            seen[request.doc_id] = seen.get(request.doc_id, 0) + 1
            answers.append(gold if seen[request.doc_id] <= 5 else "    return None\n")
        return answers


def test_table_1_samples_both_code_tasks_as_the_paper_does():
    """"average pass@1 scores for HumanEval and MBPP ... temperature of 0.2 and ... top-p = 0.95"."""
    import yaml
    from minitron.evals.suites import load_suite

    folder = Path(code_exec.__file__).parent / "tasks" / "code"
    for task in ("minitron_humaneval_n20", "minitron_mbpp_n20"):
        config = yaml.safe_load((folder / f"{task}.yaml").read_text())
        generation = config["generation_kwargs"]
        assert (config["repeats"], generation["do_sample"], generation["temperature"], generation["top_p"]) == (
            20, True, 0.2, 0.95)
    assert {"minitron_humaneval_n20", "minitron_mbpp_n20"} <= {t.task for t in load_suite("base").tasks}


def test_n20_scores_unbiased_pass_at_1_over_the_samples():
    out = evaluate(FiveOfTwentyLM(), "minitron_humaneval_n20", limit=10)
    assert out["results"]["minitron_humaneval_n20"][KEY] == pytest.approx(0.25)
    assert {len(s["filtered_resps"][0]) for s in out["samples"]["minitron_humaneval_n20"]} == {20}


class MustNotGenerateLM(GenerationOnlyLM):
    def generate_until(self, requests):
        raise AssertionError("generated although code execution is not allowed")


@pytest.mark.parametrize("task", ["minitron_humaneval", "minitron_humaneval_n20", "minitron_fixture_humaneval",
                                  "minitron_fixture_mbpp"])
def test_code_tasks_refuse_before_generating(monkeypatch, task):
    monkeypatch.delenv(code_exec.ALLOW_ENV)
    with pytest.raises(CodeExecutionNotAllowed, match="--allow-code-execution"):
        evaluate(MustNotGenerateLM(), task)


def test_lm_eval_also_requires_confirmation():
    with pytest.raises(ValueError, match="confirm_run_unsafe_code"):
        lm_eval.simple_evaluate(model=CodeOracleLM(), tasks=["minitron_fixture_mbpp"],
                                task_manager=task_manager(include_defaults=False))
