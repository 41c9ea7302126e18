"""The fixture tasks (evals/tasks/fixtures/, data in evals/fixtures/): lm-eval's real task logic on small datasets
the project ships, so the evaluation pipeline can be tested offline in seconds.

Models with known answers stand in for neural networks: an oracle must score the maximum on every task, a
constant model must score chance (the gold answers are spread evenly over the choice positions), and a tiny
random Llama must give identical results twice.
"""

from __future__ import annotations

import json
import os

# Before lm-eval imports `datasets`, which reads these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import lm_eval  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from eval_models import ConstantLM, OracleLM  # noqa: E402
from minitron.evals.tasks import FIXTURES_DIR, task_manager  # noqa: E402

# Few-shot counts of the fixture suite (the paper's 25-shot ARC and 10-shot HellaSwag cut to 5 for speed).
SHOTS = {
    "minitron_fixture_winogrande": 5,
    "minitron_fixture_arc_challenge": 5,
    "minitron_fixture_hellaswag": 5,
    "minitron_fixture_mmlu_elementary_mathematics": 5,
    "minitron_fixture_gsm8k": 5,
    "minitron_fixture_truthfulqa_mc2": 0,
    "minitron_fixture_gpqa_main_zeroshot": 0,
    "minitron_fixture_xlsum_en": 3,
}
TASKS = list(SHOTS)
METRICS = {
    "minitron_fixture_winogrande": ["acc,none"],
    "minitron_fixture_arc_challenge": ["acc,none", "acc_norm,none"],
    "minitron_fixture_hellaswag": ["acc,none", "acc_norm,none"],
    "minitron_fixture_mmlu_elementary_mathematics": ["acc,none"],
    "minitron_fixture_gsm8k": ["exact_match,strict-match", "exact_match,flexible-extract"],
    "minitron_fixture_truthfulqa_mc2": ["acc,none"],
    "minitron_fixture_gpqa_main_zeroshot": ["acc,none", "acc_norm,none"],
    "minitron_fixture_xlsum_en": ["rouge1,none", "rouge2,none", "rougeL,none"],
}
EVAL_FILES = {
    "minitron_fixture_winogrande": "winogrande/validation.jsonl",
    "minitron_fixture_arc_challenge": "arc_challenge/test.jsonl",
    "minitron_fixture_hellaswag": "hellaswag/validation.jsonl",
    "minitron_fixture_mmlu_elementary_mathematics": "mmlu_elementary_mathematics/test.jsonl",
    "minitron_fixture_gsm8k": "gsm8k/test.jsonl",
    "minitron_fixture_truthfulqa_mc2": "truthfulqa_mc2/validation.jsonl",
    "minitron_fixture_gpqa_main_zeroshot": "gpqa_main_zeroshot/train.jsonl",
    "minitron_fixture_xlsum_en": "xlsum_en/test.jsonl",
}
NUM_CHOICES = {
    "minitron_fixture_winogrande": 2,
    "minitron_fixture_arc_challenge": 4,
    "minitron_fixture_hellaswag": 4,
    "minitron_fixture_mmlu_elementary_mathematics": 4,
    "minitron_fixture_gpqa_main_zeroshot": 4,
}


def rows(task: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES_DIR / EVAL_FILES[task]).read_text().splitlines()]


def with_shots(names=TASKS) -> list:
    """The tasks built, each with its few-shot count. lm-eval 0.4.13 has no per-task num_fewshot in
    `simple_evaluate`, and a spec dict {"task": name, "num_fewshot": n} outside a group builds a task from the
    dict alone, ignoring the registered YAML; a built Task with its config set is passed through as it is."""
    tasks = task_manager(include_defaults=False).load(list(names))["tasks"]
    for name, task in tasks.items():
        task.set_config(key="num_fewshot", value=SHOTS[name])
    return list(tasks.values())


def evaluate(model, tasks=None) -> dict:
    return lm_eval.simple_evaluate(model=model, tasks=tasks or with_shots(), num_fewshot=None, log_samples=True,
                                   task_manager=task_manager(include_defaults=False), bootstrap_iters=0)


@pytest.fixture(scope="module")
def oracle_run():
    return evaluate(OracleLM(task_manager(include_defaults=False), TASKS))


@pytest.fixture(scope="module")
def constant_run():
    return evaluate(ConstantLM())


def test_fixture_tasks_are_indexed():
    assert set(TASKS) <= set(task_manager(include_defaults=False).all_tasks)


@pytest.mark.parametrize("task", TASKS)
def test_metric_keys_and_sizes(constant_run, task):
    result = constant_run["results"][task]
    assert set(METRICS[task]) <= set(result)
    assert result["sample_len"] == len(rows(task))
    assert constant_run["n-shot"][task] == SHOTS[task]


def test_few_shot_examples_are_in_the_prompts(oracle_run):
    """The number of solved examples in front of the question, counted by their answer cue."""
    cues = {"minitron_fixture_arc_challenge": "\nAnswer:", "minitron_fixture_gsm8k": "\nAnswer:",
            "minitron_fixture_mmlu_elementary_mathematics": "\nAnswer:", "minitron_fixture_xlsum_en": "\nSummary:"}
    for task, cue in cues.items():
        for sample in oracle_run["samples"][task]:
            assert sample["arguments"][0][0].count(cue) == SHOTS[task] + 1


@pytest.mark.parametrize("task", TASKS)
def test_oracle_scores_the_maximum(oracle_run, task):
    result = oracle_run["results"][task]
    for key in METRICS[task]:
        assert result[key] == pytest.approx(1.0, abs=1e-6), key  # truthfulqa_mc2: 1 - O(e^-20)


@pytest.mark.parametrize("task", list(NUM_CHOICES))
def test_constant_model_scores_chance(constant_run, task):
    assert constant_run["results"][task]["acc,none"] == pytest.approx(1 / NUM_CHOICES[task], abs=0.1)


def test_constant_model_on_truthfulqa_mc2_gets_the_share_of_true_answers(constant_run):
    """Equal likelihoods spread the probability evenly, so mc2 gives the true answers' share of each question."""
    shares = [sum(r["mc2_targets"]["labels"]) / len(r["mc2_targets"]["labels"]) for r in rows(
        "minitron_fixture_truthfulqa_mc2")]
    assert constant_run["results"]["minitron_fixture_truthfulqa_mc2"]["acc,none"] == pytest.approx(
        sum(shares) / len(shares))


@pytest.mark.parametrize("task", ["minitron_fixture_gsm8k", "minitron_fixture_xlsum_en"])
def test_constant_model_scores_zero_on_generation(constant_run, task):
    assert all(constant_run["results"][task][key] == 0.0 for key in METRICS[task])


def test_longest_choice_is_no_shortcut():
    """With one log-likelihood < 0 for everything, acc_norm (divided by the choice's length) picks the longest
    choice: gold answers are the longest no more often than chance."""
    tasks = ["minitron_fixture_arc_challenge", "minitron_fixture_hellaswag", "minitron_fixture_gpqa_main_zeroshot"]
    out = evaluate(ConstantLM(loglikelihood=-1.0), with_shots(tasks))
    for task in tasks:
        assert out["results"][task]["acc_norm,none"] == pytest.approx(0.25, abs=0.1), task


def test_per_task_few_shot_through_an_inline_group():
    """The other way to give each task its own few-shot count: task entries with overrides inside a group."""
    suite = {"group": "minitron_fixture_suite", "task": [{"task": "minitron_fixture_arc_challenge", "num_fewshot": 2},
                                                         {"task": "minitron_fixture_winogrande", "num_fewshot": 3}]}
    out = evaluate(ConstantLM(), [suite])
    assert out["n-shot"] == {"minitron_fixture_arc_challenge": 2, "minitron_fixture_winogrande": 3}
    prompt = out["samples"]["minitron_fixture_arc_challenge"][0]["arguments"][0][0]
    assert prompt.count("\nAnswer:") == 3
    assert out["results"]["minitron_fixture_arc_challenge"]["acc,none"] == 0.25


def tiny_llama(tokenizer):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.fixture
def one_thread():
    """A model this small runs fastest on one thread; on a busy 2-core machine two threads were 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_model_is_deterministic(tokenizer, one_thread):
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=tiny_llama(tokenizer), tokenizer=tokenizer, device="cpu", batch_size=8)
    first, second = evaluate(lm), evaluate(lm)
    for task in TASKS:
        scores = {key: first["results"][task][key] for key in METRICS[task]}
        assert scores == {key: second["results"][task][key] for key in METRICS[task]}, task
        assert all(0.0 <= value <= 1.0 for value in scores.values()), task
        per_doc = [[(s["doc_id"], s["prompt_hash"], s["filtered_resps"]) for s in run["samples"][task]]
                   for run in (first, second)]
        assert per_doc[0] == per_doc[1], task
