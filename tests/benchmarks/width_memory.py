"""Peak resident memory of width trimming against the teacher's weight bytes (issue target: <= 1.5x).

    .venv/bin/python tests/benchmarks/width_memory.py [--hidden 2048 --layers 4]

Runs in one process: the resident set before the teacher exists is the baseline; the process's peak
(ru_maxrss) after trimming, minus that baseline, is what trimming and the teacher together ever held.
A trimmer that kept the teacher while building the student would peak near 1 + (student/teacher).
"""

import argparse
import resource

import torch
from common import llama_config
from minitron.compress.importance import Importance
from minitron.compress.width import prune_width
from minitron.core.arch import Dims, WidthTarget
from transformers import LlamaForCausalLM


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--keep", type=float, default=0.75, help="Fraction of hidden and MLP width kept.")
    args = parser.parse_args()
    cfg = llama_config(args.hidden, args.layers, args.vocab)
    baseline = rss_bytes()
    with torch.device("meta"):
        teacher = LlamaForCausalLM(cfg)
    teacher = teacher.to_empty(device="cpu")  # real, touched memory without a second init copy
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_(0, 0.02)
    teacher_bytes = sum(p.numel() * p.element_size() for p in teacher.parameters())
    after_teacher = rss_bytes() - baseline
    dims = Dims.of(cfg)
    g = torch.Generator().manual_seed(0)
    scores = Importance(hidden=torch.rand(dims.hidden, generator=g), ffn=torch.rand(dims.layers, dims.ffn, generator=g),
                        heads=torch.rand(dims.layers, dims.heads, generator=g), layers=torch.rand(dims.layers))
    target = WidthTarget(hidden_size=int(dims.hidden * args.keep) // 64 * 64, intermediate_size=int(dims.ffn * args.keep))
    student = prune_width(teacher, scores, target)
    student_bytes = sum(p.numel() * p.element_size() for p in student.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    print(f"teacher weights {teacher_bytes / 2**20:8.1f} MiB ({after_teacher / 2**20:.1f} MiB resident after creation)")
    print(f"student weights {student_bytes / 2**20:8.1f} MiB ({student_bytes / teacher_bytes:.2f}x the teacher)")
    print(f"peak resident   {peak / 2**20:8.1f} MiB above the baseline")
    print(f"peak / teacher weight bytes = {peak / teacher_bytes:.3f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
