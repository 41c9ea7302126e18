"""The training loop behind `minitron distill` and `minitron correct`, on one process or many.

    minitron distill --teacher T --student S --data DATA --out OUT --steps 40 --seq-len 256 --global-batch 16
    torchrun --nproc_per_node 8 -m minitron distill ...        # data-parallel, FSDP2-sharded, same flags

One `Objective` module holds the student and (for distillation) the teacher, and computes every loss inside
its forward: logit-only forward KL from the teacher, optionally mixed with the student's LM loss, and in the
paper's parallel teacher correction the teacher's own LM loss. Keeping the loss inside one module's forward
is what lets FSDP2 shard both models: the lm_head weights that the chunked losses multiply with are gathered
for exactly that forward and its backward.

Runs resume exactly: the data order is a function of the step, and a checkpoint holds the trained weights,
the optimizer and scheduler state and the RNG state, so an interrupted-and-resumed run logs the same losses
as an uninterrupted one. A NaN or exploding loss stops the run before the optimizer step, leaving the last
good checkpoint in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
from minitron.compress.distributed import all_mean, init_distributed, load_on_rank0, shard
from minitron.compress.kd_loss import chunked_kd_loss, chunked_lm_loss, lm_head_of
from minitron.compress.resume import (
    INPUTS,
    STATE_DIR,
    StepSampler,
    changed_settings,
    check_inputs,
    load_state,
    save_state,
)
from minitron.compress.train_config import TrainConfig
from minitron.core.errors import BadInput, OutputExists, RunFailed
from minitron.core.precision import autocast as precision_autocast
from minitron.core.records import RECORD_NAME
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


class TrainingDiverged(RunFailed):
    """The loss went non-finite or spiked (`is_spike`): the run stops, its last checkpoint kept."""


def is_spike(loss: float, running: float, cfg: TrainConfig) -> bool:
    """A step's loss far above the running mean, by ratio and in nats: divergence, not a harder batch."""
    return loss > cfg.spike_factor * running and loss - running > cfg.spike_floor


def lr_multiplier(step: int, total: int, warmup: int, peak: float, minimum: float) -> float:
    """Linear warm-up to the peak, then cosine decay to the minimum at the last step; as a fraction of peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return (minimum + 0.5 * (peak - minimum) * (1 + math.cos(math.pi * progress))) / peak


class Objective(torch.nn.Module):
    """Student and teacher, and every loss of one micro-batch computed in `forward`."""

    def __init__(self, student, teacher=None, cfg: TrainConfig | None = None, teacher_cache=None):
        super().__init__()
        self.student, self.teacher, self.cfg = student, teacher, cfg or TrainConfig()
        self.teacher_cache = teacher_cache  # compress.teacher_cache.TeacherCache: a frozen teacher's outputs, reused

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None and not self.cfg.correct_teacher:
            self.teacher.eval()  # a frozen teacher always predicts in inference mode
        return self

    def forward(self, ids: torch.Tensor, evaluate: bool = False) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch [b, s]; `evaluate` gives the validation metrics instead (student LM
        loss `lm` and its KL to the teacher `kd`, with no mixing and no teacher update)."""
        cfg = self.cfg
        labels = torch.full_like(ids, -100)
        labels[:, :-1] = ids[:, 1:]  # position t predicts token t+1; the last position has no target
        s_hidden = self.student.model(input_ids=ids, use_cache=False).last_hidden_state
        s_head = lm_head_of(self.student)
        out: dict[str, torch.Tensor] = {}
        if self.teacher is None or not (cfg.kd or evaluate):  # LM loss only: the teacher is not needed
            out["lm"] = out["loss"] = chunked_lm_loss(s_hidden, s_head.weight, labels, cfg.chunk_size,
                                                      bias=s_head.bias, softcap=s_head.softcap)
            return out
        train_teacher = cfg.correct_teacher and not evaluate
        t_head = lm_head_of(self.teacher)
        if self.teacher_cache is not None:  # fit() gives one only to a frozen teacher in one process
            t_hidden = self.teacher_cache.hidden(self.teacher, ids)
        else:
            with torch.set_grad_enabled(train_teacher and torch.is_grad_enabled()):
                t_hidden = self.teacher.model(input_ids=ids, use_cache=False).last_hidden_state
                if train_teacher:  # the same forward pass updates the teacher and teaches the student
                    out["teacher_lm"] = chunked_lm_loss(t_hidden, t_head.weight, labels, cfg.chunk_size,
                                                        bias=t_head.bias, softcap=t_head.softcap)
        kd = chunked_kd_loss(s_hidden, s_head.weight, t_hidden.detach(), t_head.weight.detach(),
                             temperature=1.0 if evaluate else cfg.temperature, chunk_size=cfg.chunk_size,
                             labels=labels, lm_weight=0.0 if evaluate else cfg.lm_weight,
                             student_lm_head_bias=s_head.bias,
                             teacher_lm_head_bias=None if t_head.bias is None else t_head.bias.detach(),
                             student_softcap=s_head.softcap, teacher_softcap=t_head.softcap)
        out["kd"], out["lm"] = kd.kd, kd.lm  # the student's LM loss comes from the same chunked pass
        if not evaluate:
            out["loss"] = kd.loss + out["teacher_lm"] if train_teacher else kd.loss
        return out


# ----------------------------------------------------------------------------------------------------------
# processes and devices


# ----------------------------------------------------------------------------------------------------------
# the loop


def enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing of every decoder layer, under the name each transformers has."""
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers 5; 4.57 has the older name
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def checkpoint_activations(objective: Objective, cfg: TrainConfig) -> None:
    """With `cfg.activation_checkpointing`, every model that trains recomputes its layers in the backward."""
    if cfg.activation_checkpointing:
        for model in (objective.student, objective.teacher if cfg.correct_teacher else None):
            if model is not None:
                enable_checkpointing(model)


@torch.no_grad()
def evaluate(objective, val, cfg: TrainConfig, device, autocast, world: int) -> dict[str, float | None]:
    """Student LM loss on held-out blocks, and its KL to the teacher when there is one."""
    objective.eval()
    sums: dict[str, float] = {}
    batches = 0
    for ids in val.batches(cfg.micro_batch, limit=cfg.eval_batches):
        with autocast:
            for k, v in objective(ids.to(device), evaluate=True).items():
                sums[k] = sums.get(k, 0.0) + v.item()
        batches += 1
    objective.train()
    means = all_mean({k: v / max(batches, 1) for k, v in sums.items()}, world)
    return {"val_loss": means["lm"], "val_kl": means.get("kd")}


def train(objective: Objective, splits, cfg: TrainConfig, out: Path, resume: bool = False, device: str = "cpu",
          stop_after: int | None = None) -> list[dict]:
    """Train `objective` on `splits.train`, logging to out/metrics.jsonl; returns this run's log records.

    `stop_after` ends the run after that many steps as if it were killed (for tests of exact resumption).
    """
    rank, world, dev = init_distributed(device)
    cfg.validate(world)
    torch.manual_seed(cfg.seed)
    for p in objective.teacher.parameters() if objective.teacher is not None else []:
        p.requires_grad_(cfg.correct_teacher)
    checkpoint_activations(objective, cfg)
    if world > 1:
        shard(objective, rank, dev)
    else:
        objective.to(dev)
    groups = [{"params": [p for p in objective.student.parameters() if p.requires_grad], "lr": cfg.lr}]
    schedules = [lambda s: lr_multiplier(s, cfg.steps, cfg.warmup, cfg.lr, cfg.min_lr)]
    if cfg.correct_teacher:
        groups.append({"params": list(objective.teacher.parameters()), "lr": cfg.teacher_lr})
        schedules.append(lambda s: lr_multiplier(s, cfg.steps, cfg.teacher_warmup, cfg.teacher_lr,
                                                 cfg.min_lr * cfg.teacher_lr / cfg.lr))
    optimizer = torch.optim.AdamW(groups, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)
    start = load_state(out, objective, optimizer, scheduler, cfg) if resume else 0
    if resume:
        log.info("resuming from step %d of %d", start, cfg.steps)
    sampler = StepSampler(len(splits.train), cfg, rank, world)
    autocast = precision_autocast(dev, cfg.precision)
    tokens_per_step = cfg.global_batch * cfg.seq_len
    if resume and rank == 0 and (out / METRICS).is_file():
        # the steps after the last checkpoint ran, were logged, and run again now: log them once
        from minitron.core.records import atomic_write, read_jsonl

        kept = [r for r in read_jsonl(out / METRICS, "metrics record") if r["step"] <= start]
        atomic_write(out / METRICS, "".join(json.dumps(r) + "\n" for r in kept))
    metrics = (out / METRICS).open("a") if rank == 0 else None
    records: list[dict] = []

    def emit(record: dict) -> None:
        records.append(record)
        if metrics:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    objective.train()
    if start == 0:
        emit({"split": "val", "step": 0, "tokens": 0, **evaluate(objective, splits.val, cfg, dev, autocast, world)})
    running = None
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=rank != 0)
    last_step = min(cfg.steps, start + stop_after) if stop_after else cfg.steps
    for step in range(start, last_step):
        began = time.perf_counter()
        micro = sampler.micro_batches(step)
        sums: dict[str, float] = {}
        for picks in micro:
            ids = torch.stack([splits.train[i] for i in picks]).to(dev)
            with autocast:
                losses = objective(ids)
            (losses["loss"] / len(micro)).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item() / len(micro)
        sums = all_mean(sums, world)
        loss = sums["loss"]
        params = [p for g in optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        spiked = running is not None and step - start >= 3 and is_spike(loss, running, cfg)
        if not math.isfinite(loss) or not math.isfinite(float(grad_norm)) or spiked:
            raise TrainingDiverged(
                f"loss {loss:.4g} at step {step + 1} (running mean {running or float('nan'):.4g}, gradient norm "
                f"{float(grad_norm):.4g}); stopped before updating the weights; the last good checkpoint is kept in "
                f"{out / STATE_DIR}. Diverging: start over with a lower --lr (--overwrite). A harmless jump: raise "
                "spike_factor or spike_floor in the recipe's correct/distill section and rerun it")
        running = loss if running is None else 0.9 * running + 0.1 * loss
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        rate = tokens_per_step / (time.perf_counter() - began)
        emit({"split": "train", "step": done, "tokens": done * tokens_per_step, "lr": lr, "loss": loss,
              "kd": sums.get("kd"), "lm": sums.get("lm"), "teacher_lm": sums.get("teacher_lm"),
              "grad_norm": float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm),
              "tokens_per_s": rate})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:,.0f}")
        if done % cfg.eval_every == 0 or done == cfg.steps:
            emit({"split": "val", "step": done, "tokens": done * tokens_per_step,
                  **evaluate(objective, splits.val, cfg, dev, autocast, world)})
        if done % cfg.save_every == 0 or done == cfg.steps:
            if not all(torch.isfinite(p).all() for p in params):  # never overwrite a good checkpoint with a bad one
                raise TrainingDiverged(f"weights became non-finite at step {done}; the last good checkpoint is kept "
                                       f"in {out / STATE_DIR}: lower --lr and rerun with --resume")
            save_state(out, objective, optimizer, scheduler, done, cfg, rank)
    bar.close()
    if metrics:
        metrics.close()
    return records


# ----------------------------------------------------------------------------------------------------------
# a whole run: checks, models, data, training, export


def _check_pair(student_dir, teacher_dir, cfg: TrainConfig):
    """Configs, tokenizer and sequence length checked before any weight or token is loaded; returns the tokenizer
    and the student's and teacher's configs (None without a teacher)."""
    from minitron.core.model_io import load_config
    from transformers import AutoTokenizer

    s_config, t_config = load_config(student_dir), None
    configs = [("student", s_config)]
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir or student_dir)
    if teacher_dir is not None:
        t_config = load_config(teacher_dir)
        configs.append(("teacher", t_config))
        s_tok = AutoTokenizer.from_pretrained(student_dir)
        if s_config.vocab_size != t_config.vocab_size or s_tok.get_vocab() != tokenizer.get_vocab():
            raise BadInput(f"teacher and student do not share a tokenizer (vocab {t_config.vocab_size} vs "
                             f"{s_config.vocab_size}, {len(tokenizer)} vs {len(s_tok)} tokens); logit distillation "
                             "needs one vocabulary: prune the student from this teacher")
    for name, config in configs:
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and cfg.seq_len > limit:
            raise BadInput(f"--seq-len {cfg.seq_len} exceeds the {name}'s {limit} positions; lower --seq-len")
    return tokenizer, s_config, t_config


def _finished_run(out: Path, cfg: TrainConfig, inputs: dict) -> list[dict]:
    """The metrics of the finished run in `out`, for a `--resume` of it with the same inputs and settings."""
    import json

    from minitron.core.records import read_jsonl

    check_inputs(out, inputs)
    changed = changed_settings(json.loads((out / RECORD_NAME).read_text()).get("config", {}), cfg)
    if changed:
        raise OutputExists(f"{out} holds a finished run with other settings ({', '.join(changed)}); pass --overwrite "
                           "to train it again, or choose another --out")
    log.info("%s holds this run, finished; nothing to resume", out)
    return read_jsonl(out / METRICS, "metrics record")


def _prepare_out(out: Path, resume: bool, overwrite: bool, rank: int) -> bool:
    """Returns whether to resume. Refuses to touch an existing folder without --resume or --overwrite."""
    if resume and (out / STATE_DIR / "train_state.pt").is_file():
        return True
    if resume:
        log.info("nothing to resume in %s (no %s/); starting from step 0", out, STATE_DIR)
    if rank != 0:  # rank 0 checks and clears the folder; it may be writing to it already
        return False
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExists(f"{out} already exists; pass --resume to continue its run or --overwrite to "
                                  "start over")
        shutil.rmtree(out)
    return False


def export_model(model, tokenizer, folder: Path, rank: int) -> None:
    """Write a standard HF checkpoint of a (possibly sharded) model from rank 0, file by file atomically."""
    from minitron.core.model_io import save_tokenizer
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank != 0:
        return
    if getattr(model.config, "tie_word_embeddings", False):  # sharded, the tie is not seen: one copy, as HF saves it
        state.pop("lm_head.weight", None)
    tmp = folder.parent / f".{folder.name}.export-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    save_tokenizer(tokenizer, tmp)
    folder.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        f.replace(folder / f.name)
    tmp.rmdir()


def _warn_if_too_big(student, teacher, cfg: TrainConfig, device: str) -> None:
    """Say, before any weights are read, when the memory plan (compress/memory_plan.py) of training `student` from
    `teacher` (configs) exceeds this GPU. A warning, not a refusal: the plan is an estimate, and the caching
    allocator may still make it fit."""
    from minitron.compress.memory_plan import GB, plan_training

    plan = plan_training(student, teacher, cfg, int(os.environ.get("WORLD_SIZE", "1")), device)
    have = torch.cuda.get_device_properties(torch.device(device)).total_memory
    if plan.total > have:
        log.warning("this run is planned at %.1f GB per GPU, over this GPU's %.1f GB: it may run out of memory; "
                    "`minitron run RECIPE --dry-run` names a micro-batch or activation checkpointing that fits (%s)",
                    plan.total / GB, have / GB, plan.describe())


def fit(student_dir: str, data: str, out: str | Path, cfg: TrainConfig, teacher_dir: str | None = None,
        stage: str = "distill", resume: bool = False, overwrite: bool = False, random_init: bool = False,
        device: str = "cpu", stop_after: int | None = None, teacher_cache: str | Path | None = None) -> list[dict]:
    """Check everything, train, and write out/ as a HF checkpoint with its state, metrics and record.

    `student_dir` is the model that trains (the teacher itself for `correct`); `random_init` replaces its
    weights with a fresh initialisation of the same architecture (the paper's Figure 6 baseline);
    `teacher_cache` is a folder where a frozen teacher's outputs are kept for other runs on the same tokens
    (compress/teacher_cache.py; one process only).
    """
    from minitron.compress.data import load_blocks
    from minitron.core.gguf import local_model
    from minitron.core.records import RECORD_NAME, atomic_write, folder_lock, refuse_overlap, write_record
    from transformers import AutoModelForCausalLM

    cfg.validate(int(os.environ.get("WORLD_SIZE", "1")))
    refuse_overlap(out, (student_dir, teacher_dir, data, teacher_cache))
    student_dir, teacher_dir = local_model(student_dir), teacher_dir and local_model(teacher_dir)
    out = Path(out)
    rank = int(os.environ.get("RANK", "0"))
    tokenizer, student_config, teacher_config = _check_pair(student_dir, teacher_dir, cfg)
    if device.startswith("cuda"):
        _warn_if_too_big(student_config, teacher_config, cfg, device)
    inputs = {"student": str(student_dir), "teacher": teacher_dir and str(teacher_dir), "data": data,
              "random_init": random_init}
    with contextlib.ExitStack() as held:
        if rank == 0:  # one writer per folder: a second `distill --out` of it is refused, naming the first
            held.enter_context(folder_lock(out))
        if resume and (out / RECORD_NAME).is_file():  # finished (its optimizer state is gone): nothing to redo
            return _finished_run(out, cfg, inputs)
        resuming = _prepare_out(out, resume, overwrite, rank)
        if resuming:
            check_inputs(out, inputs)
        splits = load_blocks(data, tokenizer, cfg.seq_len, seed=cfg.seed)
        if len(splits.val) == 0:
            raise BadInput(f"{data} gives {len(splits.train)} block(s) of {cfg.seq_len} tokens, too few for a "
                             "validation split; add data or lower --seq-len")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        student = load_on_rank0(student_dir, torch.float32, rank, world)
        if random_init and rank == 0:  # the other ranks' meta copies take rank 0's draw when sharded
            torch.manual_seed(cfg.seed)
            student = AutoModelForCausalLM.from_config(student.config, dtype=torch.float32)
        teacher = None
        if teacher_dir is not None:
            frozen_bf16 = not cfg.correct_teacher and device.startswith("cuda") and cfg.precision != "fp32"
            teacher = load_on_rank0(teacher_dir, torch.bfloat16 if frozen_bf16 else torch.float32, rank, world)
        cache = None
        single = int(os.environ.get("WORLD_SIZE", "1")) == 1
        if teacher_cache and teacher is not None and not cfg.correct_teacher and single:
            from minitron.compress.teacher_cache import TeacherCache
            from minitron.core.precision import uses_bf16

            kind = f"{torch.device(device).type}|bf16={uses_bf16(device, cfg.precision)}"
            cache = TeacherCache(teacher_cache, teacher_dir, kind)
        objective = Objective(student, teacher, cfg, cache)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / RECORD_NAME).unlink(missing_ok=True)  # the record marks a finished run; this one is not yet
            if not resuming:
                atomic_write(out / INPUTS, json.dumps(inputs, indent=2) + "\n")
        records = train(objective, splits, cfg, out, resume=resuming, device=device, stop_after=stop_after)
        finished = bool(records) and max(r["step"] for r in records) == cfg.steps
        if cache is not None:
            log.info("teacher outputs: %d of %d micro-batches reused from %s", cache.hits, cache.hits + cache.misses,
                     cache.folder)
        if finished:
            export_model(objective.student, tokenizer, out, rank)
            if cfg.correct_teacher:
                export_model(objective.teacher, tokenizer, out / "corrected-teacher", rank)
            if rank == 0:
                final = {k: v for k, v in records[-1].items() if k != "split"}
                write_record(out, stage, seed=cfg.seed, student=str(student_dir), teacher=teacher_dir, data=data,
                             random_init=random_init, config=dataclasses.asdict(cfg), final_validation=final,
                             world_size=int(os.environ.get("WORLD_SIZE", "1")))
                # the optimizer state is three times the model and only resumes an unfinished run: a findings recipe
                # of 25 runs would otherwise keep 20 GB of it
                shutil.rmtree(out / STATE_DIR, ignore_errors=True)
        if dist.is_initialized():
            dist.barrier()
        return records
