"""`minitron eval` end to end, offline: a tiny model through the fixture suite, the gate on real run folders,
the table, the Winogrande depth scan, and bad input that exits 2."""

import json
import time

import pytest
from conftest import stdlib_texts, tiny_model
from eval_models import OracleLM
from minitron.core.model_io import save_checkpoint
from minitron.evals.gate import gate
from minitron.evals.run import evaluate_suite, write_run
from minitron.evals.suites import load_suite

from minitron import cli


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("evals") / "tiny"
    save_checkpoint(tiny_model("llama", layers=4, positions=512), tokenizer, folder)
    return folder


def suite_file(tmp_path, name, fewshot):
    path = tmp_path / f"{name}-{fewshot}.yaml"
    path.write_text(f"name: {name}\npaper_table: table1_base.csv\ntasks:\n"
                    f"  - {{task: minitron_fixture_winogrande, num_fewshot: {fewshot}, metric: 'acc,none', paper_row: winogrande}}\n"
                    f"  - {{task: minitron_fixture_arc_challenge, num_fewshot: 2, metric: 'acc_norm,none'}}\n"
                    f"  - {{task: minitron_fixture_gsm8k, num_fewshot: 2, metric: 'exact_match,strict-match'}}\n")
    return path


def test_fixture_suite_on_a_tiny_model_is_deterministic(model_dir, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert cli.main(["eval", "run", "--model", str(model_dir), "--suite", "fixtures", "--out", str(out),
                              "--label", "tiny"]) == 0
    first, second = (json.loads((o / "results.json").read_text())["results"] for o in outs)
    assert first == second
    expected = {"minitron_fixture_winogrande": "acc,none", "minitron_fixture_arc_challenge": "acc_norm,none",
                "minitron_fixture_hellaswag": "acc_norm,none", "minitron_fixture_mmlu_elementary_mathematics": "acc,none",
                "minitron_fixture_gsm8k": "exact_match,strict-match", "minitron_fixture_truthfulqa_mc2": "acc,none",
                "minitron_fixture_xlsum_en": "rougeL,none"}
    for task, key in expected.items():
        assert 0.0 <= first[task][key] <= 1.0, task
    assert "acc,none" in first["minitron_fixture_arc_challenge"]  # acc beside acc_norm
    record = json.loads((outs[0] / "minitron.json").read_text())
    assert record["suite"] == "fixtures" and record["provenance"]["git_sha"] is not None
    samples = (outs[0] / "samples" / "minitron_fixture_winogrande.jsonl").read_text().splitlines()
    assert len(samples) == 20 and "prompt_hash" in json.loads(samples[0])
    assert cli.main(["eval", "gate", str(outs[0]), str(outs[1])]) == 0


class DegradedOracle(OracleLM):
    """The oracle with its confidence inverted on every other document: a model that got worse."""

    def loglikelihood(self, requests):
        answers = super().loglikelihood(requests)
        return [(-20.0 - ll if r.doc_id % 2 else ll, greedy) for r, (ll, greedy) in zip(requests, answers)]


def test_gate_fails_a_degraded_model_and_flags_a_changed_prompt(tmp_path, capsys):
    suite = load_suite(str(suite_file(tmp_path, "mini", 2)))
    write_run(tmp_path / "oracle", evaluate_suite(OracleLM(), suite), suite, "oracle", "memory")
    write_run(tmp_path / "degraded", evaluate_suite(DegradedOracle(), suite), suite, "degraded", "memory")
    assert cli.main(["eval", "gate", str(tmp_path / "oracle"), str(tmp_path / "degraded")]) == 1
    out = capsys.readouterr().out
    assert "minitron_fixture_winogrande" in out and "REGRESSED" in out
    changed = load_suite(str(suite_file(tmp_path, "mini", 3)))  # same suite name, other few-shot: new prompts
    write_run(tmp_path / "changed", evaluate_suite(OracleLM(), changed), changed, "oracle", "memory")
    verdicts = {v.task: v.status for v in gate(tmp_path / "oracle", tmp_path / "changed")}
    assert verdicts["minitron_fixture_winogrande"] == "drift" and verdicts["minitron_fixture_arc_challenge"] == "ok"


def test_table_of_two_runs_beside_the_paper(tmp_path, capsys):
    suite = load_suite(str(suite_file(tmp_path, "mini", 2)))
    write_run(tmp_path / "oracle", evaluate_suite(OracleLM(), suite), suite, "oracle", "memory", label="teacher")
    write_run(tmp_path / "worse", evaluate_suite(DegradedOracle(), suite), suite, "worse", "memory", label="student")
    assert cli.main(["eval", "table", str(tmp_path / "oracle"), str(tmp_path / "worse"), "--out",
                          str(tmp_path / "table"), "--paper-columns", "Llama 3.1 8B"]) == 0
    csv = (tmp_path / "table" / "table.csv").read_text()
    assert "student vs teacher" in csv and "paper: Llama 3.1 8B" in csv and "77.3" in csv


def test_depth_scan_scores_blocks_by_winogrande(model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    loads = []
    original = AutoModelForCausalLM.from_pretrained.__func__
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loads.append(a) or original(cls, *a, **k)))
    (tmp_path / "calib.txt").write_text("\n\n".join(stdlib_texts(3)))
    out = tmp_path / "depth"
    assert cli.main(["prune", "depth", "--model", str(model_dir), "--calib", str(tmp_path / "calib.txt"),
                          "--out", str(out), "--num-layers", "2", "--metric", "fixture-winogrande",
                          "--seq-len", "32", "--num-samples", "4"]) == 0
    header = (out / "depth_scan.csv").read_text().splitlines()[0]
    assert header.endswith("lm_loss,fixture_winogrande")
    assert json.loads((out / "minitron.json").read_text())["metric"] == "fixture-winogrande"
    assert len(loads) == 1  # one load serves every candidate block, for LM loss and Winogrande alike


@pytest.mark.parametrize("args,message", [
    (["--suite", "nonsense"], "unknown suite 'nonsense'"),
    (["--suite", "fixtures-code"], "--allow-code-execution"),
    (["--suite", "base", "--allow-code-execution"], "read their datasets from the Hugging Face hub"),
    (["--suite", "fixtures", "--backend", "tgi"], "--backend 'tgi' is unknown"),
    (["--suite", "fixtures", "--backend", "vllm"], "pip install vllm"),
    (["--suite", "fixtures", "--backend", "openai", "--model", "http://127.0.0.1:9/v1"], "no OpenAI-compatible server"),
])
def test_bad_input_exits_2_fast(model_dir, tmp_path, capsys, args, message):
    started = time.perf_counter()
    model = [] if "--model" in args else ["--model", str(model_dir)]
    assert cli.main(["eval", "run", *model, "--out", str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
    assert time.perf_counter() - started < 10 and not (tmp_path / "out").exists()


def test_unknown_task_in_a_user_suite(model_dir, tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntasks:\n  - {task: minitron_no_such_task}\n")
    assert cli.main(["eval", "run", "--model", str(model_dir), "--suite", str(path), "--out",
                          str(tmp_path / "out")]) == 2
    assert "unknown task 'minitron_no_such_task'" in capsys.readouterr().err


def test_data_dir_without_the_dataset_names_it(model_dir, tmp_path, capsys):
    (tmp_path / "cache").mkdir(exist_ok=True)
    path = tmp_path / "hub.yaml"
    path.write_text("name: hub\ntasks:\n  - {task: minitron_xlsum_en, num_fewshot: 0, metric: 'rougeL,none'}\n")
    assert cli.main(["eval", "run", "--model", str(model_dir), "--suite", str(path), "--out", str(tmp_path / "o"),
                          "--data-dir", str(tmp_path / "cache")]) == 2
    assert "minitron_xlsum_en" in capsys.readouterr().err


def test_a_generation_budget_that_fills_the_context_is_capped_and_recorded():
    """lm-eval asserts when a task's answer budget leaves no room for the prompt (a 256-token model and a
    256-token budget); the run caps the budget at half the context and says so in its results."""
    from types import SimpleNamespace

    from minitron.evals.run import _fit_generation

    def task(output, budget):
        return SimpleNamespace(OUTPUT_TYPE=output, config=SimpleNamespace(
            generation_kwargs=None if budget is None else {"max_gen_toks": budget}))

    tasks = {"long": task("generate_until", 512), "default": task("generate_until", None),
             "fits": task("generate_until", 32), "choice": task("multiple_choice", None)}
    capped = _fit_generation(tasks, SimpleNamespace(max_length=256, max_gen_toks=256))
    assert set(capped) == {"long", "default"} and "512 -> 128" in capped["long"]
    assert tasks["long"].config.generation_kwargs["max_gen_toks"] == 128
    assert tasks["fits"].config.generation_kwargs["max_gen_toks"] == 32


def test_a_task_that_inherits_local_data_needs_no_hub():
    """The fixture HumanEval task `include:`s the real one, whose dataset is local (custom_dataset): offline
    runs must not refuse it as needing the hub."""
    from minitron.evals.run import needs_hub
    from minitron.evals.suites import load_suite

    assert not any(needs_hub(task) for task in load_suite("fixtures-code").tasks)


def test_the_openai_backend_names_the_extra_it_needs(monkeypatch):
    import importlib.util

    import minitron.core.server
    from minitron.evals import backends

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tenacity" else real(name, *a))
    monkeypatch.setattr(minitron.core.server, "probe", lambda url: [{"id": "served"}])  # a server that answers
    with pytest.raises(backends.BackendUnavailable, match=r"needs tenacity .*pip install 'minitron\[api\]'"):
        backends.openai_lm("http://127.0.0.1:9/v1")


def test_ifeval_is_the_papers_average_of_four_accuracies():
    from minitron.evals.run import _average
    from minitron.evals.suites import load_suite

    task = next(t for t in load_suite("instruct").tasks if t.task == "ifeval")
    results = {"prompt_level_strict_acc,none": 0.5, "inst_level_strict_acc,none": 0.6,
               "prompt_level_loose_acc,none": 0.7, "inst_level_loose_acc,none": 0.8,
               "prompt_level_strict_acc_stderr,none": 0.02, "inst_level_strict_acc_stderr,none": 0.02,
               "prompt_level_loose_acc_stderr,none": 0.04, "inst_level_loose_acc_stderr,none": 0.04}
    _average(results, task)
    assert results["average,none"] == pytest.approx(0.65) and results["average_stderr,none"] == pytest.approx(0.03)


@pytest.mark.parametrize("family", ["gemma2", "phi3", "mixtral"])  # soft-capped, fused, experts
def test_other_families_run_through_the_harness(family, tokenizer, tmp_path):
    save_checkpoint(tiny_model(family, layers=2, positions=512), tokenizer, tmp_path / "model")
    suite = suite_file(tmp_path, "two", 0)
    assert cli.main(["eval", "run", "--model", str(tmp_path / "model"), "--suite", str(suite), "--out",
                     str(tmp_path / "run"), "--limit", "4"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    assert {"minitron_fixture_winogrande", "minitron_fixture_gsm8k"} <= set(results)
