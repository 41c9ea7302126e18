"""`minitron run`: stages chain, a rerun skips what is done, a changed setting reruns only what depends on it."""

import json
import re

import pytest
import yaml
from conftest import stdlib_texts, tiny_model
from minitron.core.model_io import save_checkpoint

from minitron import pipeline
from minitron import stages as stage_work


@pytest.fixture
def recipe(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    save_checkpoint(tiny_model("llama", layers=4), tokenizer, tmp_path / "teacher")
    (tmp_path / "data.txt").write_text("\n\n".join(stdlib_texts(6)))
    train = {"steps": 2, "seq_len": 32, "global_batch": 4, "micro_batch": 2, "lr": 1e-3, "min_lr": 1e-4,
             "warmup": 1, "eval_every": 2, "eval_batches": 1, "save_every": 2}
    body = {"name": "tiny-test", "work_dir": str(tmp_path / "work"),
            "teacher": {"model": str(tmp_path / "teacher"), "config": str(tmp_path / "teacher" / "config.json")},
            "data": str(tmp_path / "data.txt"), "correct": train,
            "importance": {"num_samples": 4, "seq_len": 32, "batch_size": 2},
            "prune": {"method": "width", "hidden_size": 36, "ffn_hidden_size": 64}, "distill": {**train, "steps": 3}}
    path = tmp_path / "recipe.yaml"
    path.write_text("# test recipe\n" + yaml.safe_dump(body))
    return path


def test_run_then_rerun_skips_then_a_change_reruns_only_downstream(recipe):
    first = pipeline.run(recipe)
    assert [a for _, a in first] == ["run", "run", "run"]
    work = recipe.parent / "work" / "tiny-test"
    distilled = work / "distilled"
    assert json.loads((distilled / "minitron.json").read_text())["stage"] == "distill"
    corrected = json.loads((work / "corrected" / "minitron.json").read_text())  # each stage its own folder and steps
    assert corrected["stage"] == "correct" and corrected["final_validation"]["step"] == 2
    assert json.loads((work / "pruned" / "minitron.json").read_text())["source"] == str(work / "corrected")
    again = pipeline.run(recipe)
    assert all(a.startswith("skip") for _, a in again)
    body = yaml.safe_load(recipe.read_text())
    body["distill"]["steps"] = 4
    recipe.write_text(yaml.safe_dump(body))
    changed = dict(pipeline.run(recipe))
    assert changed["correct"].startswith("skip") and changed["prune"].startswith("skip") and changed["distill"] == "run"
    assert json.loads((distilled / "minitron.json").read_text())["final_validation"]["step"] == 4


def test_a_run_says_how_long_each_stage_took_and_where_the_time_went(recipe, caplog):
    body = yaml.safe_load(recipe.read_text())
    pipeline.run(recipe)
    body["distill"]["steps"] = 4
    recipe.write_text(yaml.safe_dump(body))
    caplog.clear()
    with caplog.at_level("INFO", logger="minitron"):
        pipeline.run(recipe)  # only distill runs again
    lines = caplog.text.splitlines()
    assert any(re.search(r"distill done in (\d+ min )?\d+ s$", line) for line in lines)
    assert not any("correct done in" in line or "prune done in" in line for line in lines)
    summary = [line for line in lines if "stage(s) in" in line]
    assert len(summary) == 1 and "1 stage(s) in" in summary[0] and "longest: distill" in summary[0]
    caplog.clear()
    with caplog.at_level("INFO", logger="minitron"):
        pipeline.run(recipe)  # nothing to do: no summary of nothing
    assert "stage(s) in" not in caplog.text


def test_durations_read_as_minutes_and_seconds():
    assert pipeline._duration(41.4) == "41 s"
    assert pipeline._duration(373.0) == "6 min 13 s"
    assert (pipeline._time_summary({"eval": 130.0, "data": 2.0})
            == "2 stage(s) in 2 min 12 s; longest: eval 2 min 10 s, data 2 s")


def test_other_data_or_another_teacher_reruns_every_stage(recipe, tokenizer):
    """Settings alone would call a stage done after its data file was edited or its teacher swapped."""
    before = {s.name: s.fingerprint for s in pipeline.plan(recipe)}
    data = recipe.parent / "data.txt"
    data.write_text(data.read_text() + "\n\none more document")
    edited = {s.name: s.fingerprint for s in pipeline.plan(recipe)}
    assert all(edited[name] != before[name] for name in before)
    save_checkpoint(tiny_model("llama", layers=4, seed=1), tokenizer, recipe.parent / "teacher")
    swapped = {s.name: s.fingerprint for s in pipeline.plan(recipe)}
    assert all(swapped[name] != edited[name] for name in before)
    assert {s.name: s.fingerprint for s in pipeline.plan(recipe)} == swapped  # and nothing else moves them


def test_a_stage_marked_done_whose_output_lost_its_record_runs_again(recipe):
    """A kill while the final files were written, or a hand-edited folder: the marker alone must not let every
    later stage fail on a missing model."""
    pipeline.run(recipe)
    (recipe.parent / "work" / "tiny-test" / "distilled" / "minitron.json").unlink()
    again = dict(pipeline.run(recipe))
    assert again["correct"].startswith("skip") and again["distill"] == "resume"
    assert (recipe.parent / "work" / "tiny-test" / "distilled" / "minitron.json").is_file()


def test_dry_run_shows_the_plan_and_runs_nothing(recipe, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="minitron")
    actions = pipeline.run(recipe, dry_run=True)
    assert [name for name, _ in actions] == ["correct", "prune", "distill"]
    assert not (recipe.parent / "work").exists()
    assert "width pruning" in caplog.text and "params" in caplog.text


def test_an_interrupted_stage_resumes(recipe):
    body = yaml.safe_load(recipe.read_text())
    body["distill"]["save_every"] = 1
    recipe.write_text(yaml.safe_dump(body))
    stages = pipeline.plan(recipe)
    for stage in stages[:2]:
        pipeline._mark(stage, complete=False)
        stage.run(resume=False)
        pipeline._mark(stage, complete=True)
    distill = stages[2]
    pipeline._mark(distill, complete=False)  # started, then killed after its first checkpoint
    from minitron.compress.train import fit

    cfg = stage_work.train_config(yaml.safe_load(recipe.read_text())["distill"], kd=True, precision="auto")
    fit(str(stages[1].out), str(recipe.parent / "data.txt"), distill.out, cfg,
        teacher_dir=str(stages[0].out), stop_after=1)
    assert dict(pipeline.run(recipe))["distill"] == "resume"
    assert json.loads((distill.out / "minitron.json").read_text())["final_validation"]["step"] == 3
    trained = [json.loads(line)["step"] for line in (distill.out / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["split"] == "train"]
    assert trained == [1, 2, 3]  # step 1 from before the interruption, then 2 and 3: not restarted


def test_every_shipped_recipe_plans_stages_whose_arguments_fit_their_library_functions():
    """A stage is data: a library function and its keyword arguments. Binding them to the signature catches a
    renamed or missing argument at plan time, for every recipe, without running anything."""
    import inspect
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "recipes").rglob("*.yaml")):
        stages = pipeline.plan(path)
        assert [s.name for s in stages][-1] in ("distill", "quantize", "deploy", "bench", "eval", "findings"), path
        for stage in stages:
            assert stage.action.__name__ != "<lambda>" and stage.action.__module__.startswith("minitron."), stage.name
            inspect.signature(stage.action).bind(**stage.arguments, **({"resume": False} if stage.trains else {}))


def test_the_findings_read_only_stages_the_plan_declares():
    from pathlib import Path

    from minitron.findings_report import SECTIONS

    stages = {s.name: s for s in pipeline.plan(Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml")}
    for title, _, _, needs in SECTIONS:
        for kind in needs:
            assert stages[kind.name].out.name == kind.folder, title
    assert set(stages["findings"].arguments["folders"]) == set(stages) - {"findings"}


def test_findings_need_a_depth_student_and_their_baselines_a_corrected_teacher(recipe):
    body = yaml.safe_load(recipe.read_text())
    body["findings"] = {"out": "results/x"}
    recipe.write_text(yaml.safe_dump(body))
    with pytest.raises(ValueError, match="set prune.depth_layers"):
        pipeline.plan(recipe)
    body["findings"]["depht"] = 2
    body["prune"]["depth_layers"] = 2
    recipe.write_text(yaml.safe_dump(body))
    with pytest.raises(ValueError, match="findings: unknown field depht; allowed: baselines, depth_scan, out, seeds, tolerance"):
        pipeline.plan(recipe)
    del body["findings"]["depht"]
    body.pop("correct")
    recipe.write_text(yaml.safe_dump(body))
    with pytest.raises(ValueError, match="add a `correct` section, or set findings.baselines: false"):
        pipeline.plan(recipe)
    body["findings"]["baselines"] = False  # the recipe's own students only: no uncorrected-teacher arms
    recipe.write_text(yaml.safe_dump(body))
    names = [stage.name for stage in pipeline.plan(recipe)]
    assert names == ["prune", "distill", "prune-depth", "distill-depth", "prune-random", "prune-magnitude", "findings"]
    body["findings"]["seeds"] = 0
    recipe.write_text(yaml.safe_dump(body))
    with pytest.raises(ValueError, match="findings.seeds is how many seeds"):
        pipeline.plan(recipe)
    body["findings"]["seeds"] = 1
    body["findings"]["depth_scan"] = {"metric": "stdlib-next-line", "scan_lengths": "1,2", "scan_samles": 2}
    recipe.write_text(yaml.safe_dump(body))
    with pytest.raises(ValueError, match="findings.depth_scan: unknown field scan_samles; allowed: metric, scan_lengths, scan_samples"):
        pipeline.plan(recipe)
    body["findings"]["depth_scan"] = {"metric": "stdlib-next-line", "scan_lengths": "1,2"}
    recipe.write_text(yaml.safe_dump(body))
    stages = {s.name: s for s in pipeline.plan(recipe)}  # Figures 8 and 9 from a scan of their own
    assert stages["scan-depth"].settings["metric"] == "stdlib-next-line" and "scan-depth" in stages["findings"].needs
    assert stages["scan-depth"].settings["num_layers"] == 2 and stages["prune-depth"].settings["metric"] == "lm-loss"


def test_each_seed_trains_every_compared_student_and_draws_its_own_random_ranking(recipe):
    body = yaml.safe_load(recipe.read_text())
    body["prune"]["depth_layers"] = 2
    body["findings"] = {"out": "results/x", "seeds": 3}
    recipe.write_text(yaml.safe_dump(body))
    stages = {s.name: s for s in pipeline.plan(recipe)}
    for name in ("distill", "distill-depth", "distill-original", "distill-parallel", "distill-random-init",
                 "distill-random-pruning", "train-lm-loss", "prune-random"):
        assert {name, f"{name}-seed1", f"{name}-seed2"} <= set(stages), name
        assert stages[f"{name}-seed2"].settings["seed"] == 2 and "seed" not in stages[name].settings
        assert stages[f"{name}-seed2"].out != stages[name].out
    assert "prune-magnitude-seed1" not in stages and "prune-original-seed1" not in stages  # nothing random in them
    assert stages["distill-random-pruning-seed1"].needs[0] == "prune-random-seed1"
    assert set(stages["findings"].needs) >= {"distill-seed2", "train-lm-loss-seed1"}
    body["eval"] = {"suite": "fixtures"}  # Table 1's students are evaluated under every seed too
    recipe.write_text(yaml.safe_dump(body))
    stages = {s.name: s for s in pipeline.plan(recipe)}
    assert set(stages["eval-seeds"].needs) == {"distill-seed1", "distill-depth-seed1", "distill-seed2",
                                              "distill-depth-seed2"} and "eval-seeds" in stages["findings"].needs
    assert len({s.out for s in stages.values()}) == len(stages)


def test_the_tiny_recipe_plans_every_finding_and_each_stage_depends_only_on_its_inputs():
    from pathlib import Path

    stages = {s.name: s for s in pipeline.plan(Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml")}
    for name in ("distill-depth", "distill-original", "distill-parallel", "distill-random-init",
                 "distill-random-pruning", "train-lm-loss", "bench", "eval", "findings"):
        assert name in stages
    assert stages["distill-original"].needs == ("prune-original", "teacher")  # not the corrected teacher
    assert "correct" in stages["distill-random-init"].needs
    assert set(stages["findings"].needs) >= {"distill-parallel", "bench", "eval"}
    assert stages["findings"].out == Path("results/tiny")
    assert len({s.out for s in stages.values()}) == len(stages)  # every stage its own folder


@pytest.mark.timeout(300)
def test_two_processes_under_torchrun_run_the_recipe_once(recipe, tmp_path):
    """Training stages on both processes, the others on rank 0 alone; then a one-process rerun skips it all."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "minitron", "run", str(recipe)]
    done = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    # the plan, the stage's time and the summary are logged by rank 0 only
    assert done.stderr.count("distill run ") == 1 and done.stderr.count("distill done in") == 1
    assert done.stderr.count("stage(s) in") == 1
    record = json.loads((recipe.parent / "work" / "tiny-test" / "distilled" / "minitron.json").read_text())
    assert record["world_size"] == 2 and record["final_validation"]["step"] == 3
    assert all(action.startswith("skip") for _, action in pipeline.run(recipe))


def test_rerun_starts_a_stage_over_with_everything_that_reads_it(recipe):
    pipeline.run(recipe)
    actions = dict(pipeline.run(recipe, rerun=["prune"]))
    assert actions == {"correct": "skip (complete, settings unchanged)", "prune": "run", "distill": "run"}
    with pytest.raises(ValueError, match="--rerun nope: no such stage"):
        pipeline.run(recipe, rerun=["nope"])


def test_the_plan_says_where_an_engine_has_not_confirmed_the_family(recipe, tokenizer):
    """A Gemma 2 teacher: its FP8 and TensorRT-LLM stages carry the caveat in the plan, before any training."""
    body = yaml.safe_load(recipe.read_text())
    gemma = recipe.parent / "gemma"
    save_checkpoint(tiny_model("gemma2", layers=4), tokenizer, gemma)
    body["teacher"] = {"model": str(gemma), "config": str(gemma / "config.json")}
    body.update(quantize={"num_samples": 4}, deploy={"backend": "trtllm"})
    recipe.write_text(yaml.safe_dump(body))
    described = {stage.name: stage.describe for stage in pipeline.plan(recipe)}
    assert "modelopt support for Gemma2ForCausalLM is unconfirmed" in described["quantize"]
    assert "trtllm support for Gemma2ForCausalLM is unconfirmed" in described["deploy"]


def test_a_recipe_can_name_a_budget_instead_of_sizes(recipe):
    """`prune.budget`: the search picks the width student, which distillation then trains."""
    body = yaml.safe_load(recipe.read_text())
    body["prune"] = {"method": "width", "budget": {"params": 0.8, "steps": 6, "fill": 0.6, "eval_blocks": 2}}
    recipe.write_text(yaml.safe_dump(body))
    stages = {stage.name: stage for stage in pipeline.plan(recipe)}
    assert "minitron search" in stages["prune"].describe
    pipeline.run(recipe)
    work = recipe.parent / "work" / "tiny-test"
    searched = json.loads((work / "pruned" / "minitron.json").read_text())
    assert searched["stage"] == "search" and (work / "pruned" / "candidates.csv").is_file()
    assert searched["winner"]["params"] <= 0.8 * searched["teacher"]["params"]
    assert json.loads((work / "distilled" / "minitron.json").read_text())["student"].endswith("pruned")


@pytest.mark.parametrize("prune,message", [
    ({"method": "width", "hidden_size": 36, "budget": {"params": 0.7}}, "drop hidden_size from prune"),
    ({"method": "width", "budget": {"parms": 0.7}}, "prune.budget: unknown field"),
    ({"method": "depth", "num_layers": 3, "budget": {"params": 0.7}}, "drop method: depth"),
])
def test_a_budget_is_checked_when_the_recipe_loads(recipe, prune, message):
    from minitron.core.errors import BadInput

    from minitron.recipe import load_recipe

    body = yaml.safe_load(recipe.read_text())
    body["prune"] = prune
    recipe.write_text(yaml.safe_dump(body))
    with pytest.raises(BadInput, match=message):
        load_recipe(recipe)
