"""bf16 autocast against fp32 on this CPU, for the work the embedded default does: the forward passes of the
depth scan and evaluation, the importance pass, and the distillation step; tokens/s of each, and the ratio.

    .venv/bin/python tests/benchmarks/cpu_precision.py --model work/smollm2/teacher    # the 135M SmolLM2 teacher
    .venv/bin/python tests/benchmarks/cpu_precision.py --model work/smollm2/teacher --batch-size 1 --seq-len 64

The student of the distillation step is the teacher width-pruned at the embedded default's target (hidden 432,
FFN 1024) with random scores: its shape, not its ranking, sets the cost. Best of --repeats, all in one process,
with the same batch for both precisions; weights stay fp32 in both (autocast runs the matmuls in bf16).
"""

import argparse
import copy

import torch
from common import best_time
from minitron.compress.importance import Importance, estimate_importance
from minitron.compress.train import Objective
from minitron.compress.train_config import TrainConfig
from minitron.compress.width import prune_width
from minitron.core.arch import Dims, WidthTarget
from minitron.core.model_io import load_model
from minitron.core.precision import autocast, cpu_has_native_bf16


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="A HF checkpoint folder or a .gguf file.")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--hidden-size", type=int, default=432)
    parser.add_argument("--ffn-hidden-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from minitron.core.gguf import local_model

    teacher, _ = load_model(local_model(args.model), dtype=torch.float32)
    dims = Dims.of(teacher.config)
    student = prune_width(copy.deepcopy(teacher), Importance.random(dims),
                          WidthTarget(args.hidden_size, args.ffn_hidden_size)).train()
    for p in teacher.parameters():
        p.requires_grad_(False)
    ids = torch.randint(0, dims.vocab, (args.batch_size, args.seq_len), generator=torch.Generator().manual_seed(0))
    objective = Objective(student, teacher, TrainConfig(chunk_size=1024)).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)

    def forward():
        with torch.no_grad():
            teacher(input_ids=ids, use_cache=False)

    def importance():
        estimate_importance(teacher, [ids])

    def distill_step():
        objective(ids)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    tokens = ids.numel()
    print(f"teacher {sum(p.numel() for p in teacher.parameters()) / 1e6:.1f}M, student "
          f"{sum(p.numel() for p in student.parameters()) / 1e6:.1f}M params, batch {args.batch_size}x{args.seq_len}, "
          f"{torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}")
    print(f"{'work':<42}{'fp32 tok/s':>12}{'bf16 tok/s':>12}{'bf16/fp32':>11}")
    for name, fn in [("forward (depth scan, evaluation)", forward), ("importance pass", importance),
                     ("distillation step (fwd, bwd, AdamW)", distill_step)]:
        rates = []
        for precision in ("fp32", "bf16"):
            def timed(fn=fn, precision=precision):
                with autocast("cpu", precision):
                    fn()
            rates.append(tokens / best_time(timed, args.repeats))
        print(f"{name:<42}{rates[0]:>12,.0f}{rates[1]:>12,.0f}{rates[1] / rates[0]:>10.2f}x")


if __name__ == "__main__":
    main()
