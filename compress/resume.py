"""Exact resumption: which blocks each process reads at each step (a pure function of seed, step and rank), and
the checkpoint that holds everything else (trained weights, optimizer, scheduler, RNG, the settings that must
not change), so a run killed and resumed logs the same losses as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import torch
from minitron.compress.train_config import TrainConfig
from minitron.core.errors import BadInput

STATE_DIR = "state"


class StepSampler:
    """Which training blocks each process reads at each step: a pure function of (seed, step, rank), so a
    resumed run reads exactly what the uninterrupted one would have. Epoch 0 keeps the loader's shuffled
    order; each later epoch is a fresh permutation from the seed."""

    def __init__(self, num_blocks: int, cfg: TrainConfig, rank: int, world: int):
        self.n, self.cfg, self.rank, self.world = num_blocks, cfg, rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.arange(self.n) if epoch == 0 else
                           np.random.default_rng([self.cfg.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def micro_batches(self, step: int) -> list[list[int]]:
        per_rank = self.cfg.global_batch // self.world
        start = step * self.cfg.global_batch + self.rank * per_rank
        positions = [start + j for j in range(per_rank)]
        picks = [int(self._order(p // self.n)[p % self.n]) for p in positions]
        m = self.cfg.micro_batch
        return [picks[i:i + m] for i in range(0, per_rank, m)]


def trained_prefixes(cfg: TrainConfig) -> tuple[str, ...]:
    return ("student.", "teacher.") if cfg.correct_teacher else ("student.",)


SHARDS = "shards"
"""The state's tensors (trained weights, optimizer moments) in torch.distributed.checkpoint's format: each
process writes its own shards, so no process gathers the whole model and optimizer (70 GB at the 4B scale)."""


def _tensors(objective, optimizer, cfg: TrainConfig) -> dict:
    """The trained models' and the optimizer's state, as each process holds it (sharded under FSDP2)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(objective, optimizer)
    prefixes = trained_prefixes(cfg)
    return {"model": {k: v for k, v in model_sd.items() if k.startswith(prefixes)}, "optim": optim_sd}


def save_state(out: Path, objective, optimizer, scheduler, step: int, cfg: TrainConfig, rank: int) -> None:
    """A resumable checkpoint in out/state, replaced atomically: every process writes its shards of the
    tensors, rank 0 the rest (scheduler, step, RNG, settings) and then swaps the folder in."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    tmp = out / f"{STATE_DIR}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if dist.is_initialized():
        dist.barrier()
    try:
        dcp.save(_tensors(objective, optimizer, cfg), checkpoint_id=tmp / SHARDS, no_dist=not dist.is_initialized())
        if rank == 0:
            torch.save({"scheduler": scheduler.state_dict(), "step": step, "rng": torch.get_rng_state(),
                        "config": dataclasses.asdict(cfg)}, tmp / "train_state.pt")
    except BaseException:  # a full disk or a kill: no half-written state left behind
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dist.is_initialized():
        dist.barrier()  # every shard is written before the folder is swapped in
    if rank != 0:
        return
    final = out / STATE_DIR
    old = out / f"{STATE_DIR}.old"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


RESUME_MAY_CHANGE = ("eval_every", "eval_batches", "save_every", "chunk_size", "micro_batch",
                     "activation_checkpointing", "spike_factor", "spike_floor")
"""Settings that change how often a run validates and saves, how it splits its work (gradient accumulation,
loss chunks) or when it stops as diverged, not what it trains: everything else must match for a resume to
continue the same run."""
INPUTS = "inputs.json"
"""The models and data a run reads, beside its state: a resume with other inputs is another run."""


def changed_settings(saved: dict, cfg: TrainConfig) -> list[str]:
    """The settings of `cfg` that differ from a run's `saved` ones (as JSON holds them), bar RESUME_MAY_CHANGE."""
    def plain(settings: dict) -> dict:  # tuples as JSON gives them back: lists
        return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}

    asked, saved = plain(dataclasses.asdict(cfg)), plain(saved)
    return [k for k, v in asked.items() if k not in RESUME_MAY_CHANGE and saved.get(k, v) != v]


def check_inputs(out: Path, inputs: dict) -> None:
    """Refuse to continue the run in `out` with other models or data than it started with."""
    import json

    saved = json.loads((out / INPUTS).read_text()) if (out / INPUTS).is_file() else inputs
    changed = [f"{k} was {saved.get(k)!r}, now {v!r}" for k, v in inputs.items() if saved.get(k) != v]
    if changed:
        raise BadInput(f"cannot resume {out}: {'; '.join(changed)}; use the run's own inputs, or start over with "
                       "--overwrite")


def load_state(out: Path, objective, optimizer, scheduler, cfg: TrainConfig) -> int:
    """Restore a checkpoint written by `save_state`; returns the step to continue from."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    state = torch.load(out / STATE_DIR / "train_state.pt", map_location="cpu", weights_only=False)
    changed = changed_settings(state["config"], cfg)
    if changed:
        raise BadInput("cannot resume: " + "; ".join(f"{name} was {state['config'][name]!r}, now "
                                                     f"{getattr(cfg, name)!r}" for name in changed)
                       + "; use the original settings or start over with --overwrite")
    if (out / STATE_DIR / SHARDS).is_dir():
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp

        tensors = _tensors(objective, optimizer, cfg)
        dcp.load(tensors, checkpoint_id=out / STATE_DIR / SHARDS, no_dist=not dist.is_initialized())
        set_state_dict(objective, optimizer, model_state_dict=tensors["model"], optim_state_dict=tensors["optim"],
                       options=StateDictOptions(strict=False))
    else:  # a checkpoint of an earlier version: the whole state in train_state.pt, written by rank 0
        set_state_dict(objective, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=StateDictOptions(full_state_dict=True, strict=False))
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return state["step"]
