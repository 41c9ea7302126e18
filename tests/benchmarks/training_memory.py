"""The training memory plan (compress/memory_plan.py) against the measured peak memory of real training steps on
this CPU: one process, the plan's `gpus=1, device="cpu"` case (no FSDP, no reserve).

    .venv/bin/python tests/benchmarks/training_memory.py            # 6 variants, about 3 minutes on 2 cores

Not a test: it needs a few GB and minutes, and it measures memory. Each variant runs in a fresh subprocess that
builds a Llama-shaped student (hidden 512, 8 layers) and teacher (hidden 768, 8 layers), vocabulary 32000,
reads its resident set size (RSS), then runs two optimizer steps of compress/train.py's objective (the second
has AdamW's state) and reports the peak RSS (`getrusage`) above that baseline. Large tensors are mmap'ed by the
allocator and returned on free, so RSS follows live tensors closely. The plan counts the models too, so the
baseline is taken before they are built.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

from common import llama_config

VARIANTS = {
    "KD, bf16 autocast": dict(precision="bf16"),
    "KD, fp32": dict(precision="fp32"),
    "KD, bf16, checkpointing": dict(precision="bf16", activation_checkpointing=True),
    "KD, fp32, micro-batch 4": dict(precision="fp32", micro_batch=4),
    "LM loss only, bf16": dict(precision="bf16", kd=False),
    "parallel correction, bf16": dict(precision="bf16", correct_teacher=True),
}
SEQ_LEN, VOCAB = 1024, 32000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(name: str) -> dict:
    """Two training steps of one variant in this (fresh) process: its planned and measured peak bytes."""
    import torch
    from minitron.compress.memory_plan import plan_training
    from minitron.compress.train import Objective, checkpoint_activations
    from minitron.compress.train_config import TrainConfig
    from minitron.core.precision import autocast
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    fields = {"seq_len": SEQ_LEN, "micro_batch": 2, "global_batch": 8, "chunk_size": 1024, **VARIANTS[name]}
    cfg = TrainConfig(**fields)
    student_config, teacher_config = llama_config(512, 8, VOCAB), llama_config(768, 8, VOCAB)
    teacher_config = teacher_config if cfg.kd or cfg.correct_teacher else None
    baseline = _rss_bytes()
    student = AutoModelForCausalLM.from_config(student_config, dtype=torch.float32)
    teacher = teacher_config and AutoModelForCausalLM.from_config(teacher_config, dtype=torch.float32)
    objective = Objective(student, teacher, cfg)
    for p in teacher.parameters() if teacher is not None else []:
        p.requires_grad_(cfg.correct_teacher)
    checkpoint_activations(objective, cfg)
    objective.train()
    trained = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-4)
    ids = torch.randint(0, VOCAB, (cfg.micro_batch, SEQ_LEN))
    for _ in range(2):
        with autocast("cpu", cfg.precision):
            loss = objective(ids)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    plan = plan_training(student_config, teacher_config, cfg, gpus=1, device="cpu")
    return {"variant": name, "planned": plan.total, "measured": peak, "parts": plan.parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    print(f"Llama-shaped student (hidden 512) and teacher (hidden 768), 8 layers each, vocab {VOCAB}, "
          f"seq_len {SEQ_LEN}")
    print(f"{'variant':30s} {'planned GB':>10s} {'measured GB':>11s} {'planned/measured':>16s}")
    ratios = []
    for name in VARIANTS:
        done = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                              check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
        r = json.loads(done.stdout.strip().splitlines()[-1])
        ratios.append(r["planned"] / r["measured"])
        print(f"{name:30s} {r['planned'] / 1e9:10.2f} {r['measured'] / 1e9:11.2f} {ratios[-1]:16.2f}")
    print(f"planned / measured: {min(ratios):.2f} to {max(ratios):.2f}")


if __name__ == "__main__":
    main()
