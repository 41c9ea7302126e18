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


def load_on_rank0(path: str, dtype: torch.dtype, rank: int, world: int):
    """The model at `path` on rank 0; on the other ranks of a multi-process run the same architecture on the
    meta device, which `shard` fills from rank 0. So one process, not every one, holds the full weights in host
    memory: 8 copies of an fp32 teacher and student would be about 270 GB per node at the paper's scale."""
    from minitron.core.model_io import load_config, load_model

    if world == 1 or rank == 0:
        return load_model(path, dtype=dtype)[0]
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(load_config(path), dtype=dtype)


def shard(objective, rank: int, device: torch.device) -> None:
    """FSDP2: every decoder layer of both models is its own shard group; the rest (embeddings, norms,
    lm_heads) is sharded with the objective at the root, gathered for its forward and backward. Rank 0's
    weights (the others were built on the meta device by `load_on_rank0`) are scattered to every shard, and
    its buffers (rotary frequencies, which no checkpoint holds) copied to every process."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    full = objective.state_dict() if rank == 0 else {}
    for model in (objective.student, objective.teacher):
        if model is not None:
            for layer in model.model.layers:
                fully_shard(layer)
    fully_shard(objective)
    objective.to_empty(device=device) if rank != 0 else objective.to(device)
    set_model_state_dict(objective, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for buffer in objective.buffers():
        dist.broadcast(buffer, src=0)


def all_mean(values: dict[str, float], world: int) -> dict[str, float]:
    if world == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: v / world for k, v in zip(keys, t.tolist())}
