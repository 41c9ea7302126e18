"""Data-parallel training under torchrun: the process group, FSDP2 sharding of the student and teacher, and the
mean of logged values over processes. With one process (no torchrun) each is a no-op.

    torchrun --nproc_per_node 8 -m minitron distill ...      # what starts the processes this module joins
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device: str, timeout_hours: float | None = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun a process group is started (NCCL on GPUs, gloo on CPUs).
    `timeout_hours` raises the collectives' timeout, for callers whose other ranks wait while rank 0 works."""
    import datetime

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if world > 1 and not dist.is_initialized():
        timeout = {"timeout": datetime.timedelta(hours=timeout_hours)} if timeout_hours else {}
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", **timeout)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world, torch.device(device)


def shard(objective) -> None:
    """FSDP2: every decoder layer of both models is its own shard group; the rest (embeddings, norms,
    lm_heads) is sharded with the objective at the root, gathered for its forward and backward."""
    from torch.distributed.fsdp import fully_shard

    for model in (objective.student, objective.teacher):
        if model is not None:
            for layer in model.model.layers:
                fully_shard(layer)
    fully_shard(objective)


def all_mean(values: dict[str, float], world: int) -> dict[str, float]:
    if world == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: v / world for k, v in zip(keys, t.tolist())}
