"""Distillation and teacher correction: they learn, they resume exactly, they refuse bad input, and two
gloo processes train like one."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import stdlib_texts, tiny_model
from minitron.compress.importance import estimate_importance
from minitron.compress.train import TrainingDiverged, fit, is_spike, lr_multiplier
from minitron.compress.train_config import TrainConfig
from minitron.compress.width import prune_width
from minitron.core.arch import WidthTarget
from minitron.core.model_io import save_checkpoint
from minitron.core.records import read_jsonl
from safetensors.torch import load_file

from minitron import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tokenizer):
    """A teacher that has learned a little, and a width-pruned student of it."""
    root = tmp_path_factory.mktemp("train")
    (root / "data.txt").write_text("\n\n".join(stdlib_texts(6)))
    os.environ["MINITRON_CACHE"] = str(root / "cache")
    teacher = tiny_model("llama", layers=2)
    save_checkpoint(teacher, tokenizer, root / "teacher-init")
    fit(str(root / "teacher-init"), str(root / "data.txt"), root / "teacher", small(steps=30, lr=3e-3), stage="correct")
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(root / "teacher")
    scores = estimate_importance(trained, [torch.randint(3, 384, (4, 32))])
    student = prune_width(copy.deepcopy(trained), scores, WidthTarget(hidden_size=24, intermediate_size=48))
    save_checkpoint(student, tokenizer, root / "student")
    return root


def small(**kw) -> TrainConfig:
    base = dict(steps=8, seq_len=32, global_batch=4, micro_batch=2, lr=1e-3, min_lr=1e-4, warmup=2, eval_every=4,
                eval_batches=2, save_every=4, chunk_size=24)
    return TrainConfig(**{**base, **kw})


def val_records(records, key="val_kl"):
    return [r[key] for r in records if r["split"] == "val"]


def test_lr_schedule_warms_up_then_decays_to_the_minimum():
    lrs = [1e-4 * lr_multiplier(s, 100, 10, 1e-4, 1e-5) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[9] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert 1e-4 * lr_multiplier(100, 100, 10, 1e-4, 1e-5) == pytest.approx(1e-5)


def test_distillation_lowers_the_students_kl_and_beats_lm_only(pair, tmp_path):
    kd = fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "kd", small(steps=24, eval_every=8),
             teacher_dir=str(pair / "teacher"))
    lm = fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "lm", small(steps=24, eval_every=8, kd=False),
             teacher_dir=str(pair / "teacher"))
    kd_kl, lm_kl = val_records(kd), val_records(lm)
    kd_loss, lm_loss = val_records(kd, "val_loss"), val_records(lm, "val_loss")
    print(f"val KL   KD {kd_kl[0]:.3f} -> {kd_kl[-1]:.3f}   LM-only {lm_kl[0]:.3f} -> {lm_kl[-1]:.3f}")
    print(f"val loss KD {kd_loss[0]:.3f} -> {kd_loss[-1]:.3f}   LM-only {lm_loss[0]:.3f} -> {lm_loss[-1]:.3f}")
    assert kd_kl[-1] < 0.8 * kd_kl[0], kd_kl
    assert kd_loss[-1] < kd_loss[0], kd_loss
    assert kd_kl[-1] < lm_kl[-1], (kd_kl, lm_kl)  # KD is what moves the student towards the teacher
    record = json.loads((tmp_path / "kd" / "minitron.json").read_text())
    assert record["stage"] == "distill" and record["final_validation"]["step"] == 24
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "kd").config.hidden_size == 24


def test_interrupted_run_resumes_with_the_same_losses(pair, tmp_path):
    cfg = small(steps=8, save_every=2)
    full = fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "full", cfg, teacher_dir=str(pair / "teacher"))
    fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "cut", cfg, teacher_dir=str(pair / "teacher"),
        stop_after=5)  # killed after step 5: the last checkpoint is step 4
    assert not (tmp_path / "cut" / "minitron.json").exists()
    rest = fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "cut", cfg, teacher_dir=str(pair / "teacher"),
               resume=True)
    assert rest[0]["step"] == 5  # resumed after the step-4 checkpoint, not from scratch
    logged = [(r["split"], r["step"]) for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")]
    assert logged == [(r["split"], r["step"]) for r in full]  # step 5, run twice, logged once
    resumed = {r["step"]: r["loss"] for r in rest if r["split"] == "train"}
    for r in full:
        if r["split"] == "train" and r["step"] > 4:
            assert resumed[r["step"]] == pytest.approx(r["loss"], rel=1e-6, abs=1e-7)
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in ("full", "cut"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not (tmp_path / "full" / "state").exists()  # a finished run keeps its model, not its optimizer
    again = fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "full", cfg,
                teacher_dir=str(pair / "teacher"), resume=True)  # finished: nothing redone, nothing lost
    assert again == full and (tmp_path / "full" / "minitron.json").is_file()
    with pytest.raises(FileExistsError, match=r"holds a finished run with other settings \(steps"):
        fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "full", small(steps=9, save_every=2),
            teacher_dir=str(pair / "teacher"), resume=True)


def test_a_resume_with_other_inputs_or_settings_is_refused(pair, tmp_path):
    """Continuing a run with another teacher, data or learning rate would make a run that is neither, and its
    record would credit the new settings for all of it."""
    cfg = small(steps=8, save_every=2)
    args = (str(pair / "student"), str(pair / "data.txt"), tmp_path / "cut")
    fit(*args, cfg, teacher_dir=str(pair / "teacher"), stop_after=3)
    (tmp_path / "other.txt").write_text((pair / "data.txt").read_text())
    with pytest.raises(ValueError, match="cannot resume .*data was"):
        fit(args[0], str(tmp_path / "other.txt"), args[2], cfg, teacher_dir=str(pair / "teacher"), resume=True)
    with pytest.raises(ValueError, match="cannot resume .*teacher was"):
        fit(*args, cfg, teacher_dir=str(pair / "student"), resume=True)
    with pytest.raises(ValueError, match="cannot resume: lr was 0.001, now 0.002"):
        fit(*args, small(steps=8, save_every=2, lr=2e-3), teacher_dir=str(pair / "teacher"), resume=True)
    resumed = fit(*args, small(steps=8, save_every=4, eval_every=4), teacher_dir=str(pair / "teacher"), resume=True)
    assert resumed[-1]["step"] == 8  # how often it validates and saves may change


def test_cached_teacher_outputs_give_the_same_run_and_skip_the_teacher(pair, tmp_path, monkeypatch):
    cfg, args = small(steps=4), (str(pair / "student"), str(pair / "data.txt"))
    live = fit(*args, tmp_path / "live", cfg, teacher_dir=str(pair / "teacher"))
    cold = fit(*args, tmp_path / "cold", cfg, teacher_dir=str(pair / "teacher"), teacher_cache=tmp_path / "outputs")
    entries = list((tmp_path / "outputs").rglob("*.safetensors"))
    assert len(entries) == 4 * 2 + 2  # a micro-batch per entry: 4 steps of 2, and the 2 validation batches
    from transformers.models.llama.modeling_llama import LlamaModel

    calls = []
    forward = LlamaModel.forward
    monkeypatch.setattr(LlamaModel, "forward", lambda self, *a, **kw: calls.append(1) or forward(self, *a, **kw))
    warm = fit(*args, tmp_path / "warm", cfg, teacher_dir=str(pair / "teacher"), teacher_cache=tmp_path / "outputs")
    assert len(calls) == 4 * 2 + 2 * 2  # the student's forwards only: training, then both validations
    drop = ("time", "tokens_per_s", "elapsed_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in warm] == \
        [{k: v for k, v in r.items() if k not in drop} for r in cold] == \
        [{k: v for k, v in r.items() if k not in drop} for r in live]  # the same bits, cached or not
    fit(*args, tmp_path / "other-seed", small(steps=4, seed=1), teacher_dir=str(pair / "teacher"),
        teacher_cache=tmp_path / "outputs")  # other blocks: new entries, not stale ones
    assert len(list((tmp_path / "outputs").rglob("*.safetensors"))) > len(entries)


def test_parallel_teacher_correction_trains_both(pair, tmp_path):
    records = fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "par",
                  small(steps=4, correct_teacher=True, teacher_lr=1e-3), teacher_dir=str(pair / "teacher"))
    assert all(r["teacher_lm"] is not None for r in records if r["split"] == "train")
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(pair / "teacher").state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "par" / "corrected-teacher").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_random_init_student_trains(pair, tmp_path):
    records = fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "rand", small(steps=2),
                  teacher_dir=str(pair / "teacher"), random_init=True)
    pruned = fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "pruned", small(steps=2),
                 teacher_dir=str(pair / "teacher"))
    assert val_records(records)[0] > val_records(pruned)[0]  # pruning starts far closer than random weights


@pytest.mark.parametrize("poison", [float("nan"), 1e6])
def test_nan_or_exploding_loss_stops_and_keeps_the_last_good_checkpoint(pair, tmp_path, monkeypatch, poison):
    from minitron.compress.train import Objective

    forward, calls = Objective.forward, []

    def poisoned(self, ids, evaluate=False):  # from the 6th step's first micro-batch on, the loss goes bad
        out = forward(self, ids, evaluate)
        if not evaluate:
            calls.append(1)
            if len(calls) > 10:
                out["loss"] = out["loss"] * poison
        return out

    monkeypatch.setattr(Objective, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        fit(str(pair / "student"), str(pair / "data.txt"), tmp_path / "boom", small(steps=20, save_every=2),
            teacher_dir=str(pair / "teacher"))
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    state = torch.load(tmp_path / "boom" / "state" / "train_state.pt", weights_only=False)
    dcp_to_torch_save(tmp_path / "boom" / "state" / "shards", tmp_path / "tensors.pt")
    model = torch.load(tmp_path / "tensors.pt", weights_only=False)["model"]
    assert state["step"] == 4 and model and all(torch.isfinite(v).all() for v in model.values())
    logged = [json.loads(line) for line in (tmp_path / "boom" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged) == 5  # step 6 was refused before the optimizer ran
    assert not (tmp_path / "boom" / "minitron.json").exists()


def test_a_spike_is_a_jump_in_nats_not_only_a_ratio():
    cfg = TrainConfig()
    assert is_spike(16.0, 3.0, cfg) and is_spike(0.6, 0.002, cfg)  # diverging, from any level
    assert not is_spike(0.0113, 0.0018, cfg)  # a KD loss near zero on a harder batch (seen at step 98 of a run)
    assert not is_spike(4.0, 3.0, cfg)


def test_bad_input_is_refused_before_training(pair, tmp_path, tokenizer, capsys):
    other = tiny_model("llama", layers=2, vocab=400)
    save_checkpoint(other, tokenizer, tmp_path / "other")
    base = ["distill", "--teacher", pair / "teacher", "--data", pair / "data.txt", "--steps", 2, "--global-batch", 2]
    cases = [
        (["--student", tmp_path / "other", "--out", tmp_path / "a", "--seq-len", 32], "do not share a tokenizer"),
        (["--student", pair / "student", "--out", tmp_path / "b", "--seq-len", 1024], "exceeds the student's 256"),
        (["--student", pair / "student", "--out", tmp_path / "c", "--seq-len", 32, "--data", tmp_path / "none.txt"],
         "no such file"),
        (["--student", pair / "student", "--out", pair / "teacher", "--seq-len", 32], "is the input"),
        (["--student", pair / "student", "--out", tmp_path / "other", "--seq-len", 32], "--resume"),
        (["--student", pair / "student", "--out", tmp_path / "d", "--seq-len", 32, "--global-batch", 3,
          "--micro-batch", 2], "multiple of processes x micro batch"),
    ]
    for extra, message in cases:
        assert cli.main([str(a) for a in base + extra]) == 2, extra
        assert message in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_two_gloo_processes_match_one(pair, tmp_path, tokenizer, tied):
    """Rank 0 alone loads the weights; the other rank builds on the meta device and is filled when sharded. The
    losses and the exported student must be those of one process (tied embeddings too, as SmolLM2's)."""
    models = pair
    if tied:
        models = tmp_path / "tied"
        for name, layers, seed in (("teacher", 4, 0), ("student", 2, 1)):
            save_checkpoint(tiny_model("llama", layers=layers, seed=seed, tie=True), tokenizer, models / name)
    args = ["distill", "--teacher", models / "teacher", "--student", models / "student", "--data", pair / "data.txt",
            "--steps", 3, "--seq-len", 32, "--global-batch", 4, "--micro-batch", 1, "--lr", 1e-3, "--min-lr", 1e-4,
            "--warmup", 1, "--eval-every", 3, "--eval-batches", 2, "--precision", "fp32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    for procs, out in [(1, "one"), (2, "two")]:
        cmd = run + [str(procs), "-m", "minitron"] + [str(a) for a in args] + ["--out", str(tmp_path / out)]
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=280)
        assert done.returncode == 0, done.stderr[-3000:]
    logs = {out: [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
            for out in ("one", "two")}
    one = [r["loss"] for r in logs["one"] if r["split"] == "train"]
    two = [r["loss"] for r in logs["two"] if r["split"] == "train"]
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=1e-4)
    a, b = (load_file(tmp_path / out / "model.safetensors") for out in ("one", "two"))
    assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.timeout(300)
def test_two_processes_resume_from_their_shards_as_if_never_stopped(pair, tmp_path):
    """Each process writes its own shards of the weights and optimizer (no gather on rank 0); killed after
    step 3 (its last checkpoint: step 2) and resumed, by two processes or by one, the run logs and exports what
    the uninterrupted one does."""
    import shutil

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(processes: int, out: str, *extra: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
             str(ROOT / "tests" / "compress" / "resume_worker.py"), str(pair / "teacher"), str(pair / "student"),
             str(pair / "data.txt"), str(tmp_path / out), *extra], env=env, cwd=ROOT, capture_output=True, text=True,
            timeout=280)
        assert done.returncode == 0, done.stderr[-3000:]

    run(2, "full")
    run(2, "cut", "--stop-after", "3")
    assert (tmp_path / "cut" / "state" / "shards").is_dir()  # sharded, not one gathered file
    shutil.copytree(tmp_path / "cut", tmp_path / "cut-then-one")
    run(2, "cut", "--resume")
    run(1, "cut-then-one", "--resume")  # the shards of two processes, read back by one
    logs = {out: [(r["split"], r["step"], r["loss"]) for r in read_jsonl(tmp_path / out / "metrics.jsonl")
                  if r["split"] == "train"] for out in ("full", "cut", "cut-then-one")}
    for resumed in ("cut", "cut-then-one"):
        assert [step for _, step, _ in logs[resumed]] == [1, 2, 3, 4]
        assert [loss for *_, loss in logs[resumed]] == pytest.approx([loss for *_, loss in logs["full"]], rel=1e-5)
        a, b = (load_file(tmp_path / out / "model.safetensors") for out in ("full", resumed))
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_activation_checkpointing_trains_the_same_student(pair, tmp_path):
    args = (str(pair / "student"), str(pair / "data.txt"))
    plain = fit(*args, tmp_path / "plain", small(steps=4), teacher_dir=str(pair / "teacher"))
    recomputed = fit(*args, tmp_path / "recomputed", small(steps=4, activation_checkpointing=True),
                     teacher_dir=str(pair / "teacher"))
    assert [r["loss"] for r in recomputed if r["split"] == "train"] == pytest.approx(
        [r["loss"] for r in plain if r["split"] == "train"], rel=1e-5)
    assert load_file(tmp_path / "recomputed" / "model.safetensors")["model.norm.weight"].allclose(
        load_file(tmp_path / "plain" / "model.safetensors")["model.norm.weight"], atol=1e-6)
