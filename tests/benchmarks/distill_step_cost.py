"""Cost of one distillation step against a teacher forward plus a student forward-backward, measured
separately on the same batch (issue target: <= 1.1x), and the tokens/s of a tiny model on this machine.

    .venv/bin/python tests/benchmarks/distill_step_cost.py [--hidden 512 --vocab 32000 --seq-len 512]

The references are plain Hugging Face calls: `teacher(ids)` under no_grad and `student(ids, labels=ids)
.loss.backward()`. The step is `Objective(student, teacher)(ids)["loss"].backward()`: chunked forward KL.
Best of --repeats, all in this one process.
"""

import argparse
import copy

import torch
from common import best_time, llama_config
from minitron.compress.importance import Importance
from minitron.compress.train import Objective
from minitron.compress.train_config import TrainConfig
from minitron.compress.width import prune_width
from minitron.core.arch import Dims, WidthTarget
from transformers import LlamaForCausalLM


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = llama_config(args.hidden, args.layers, args.vocab, positions=args.seq_len)
    teacher = LlamaForCausalLM(cfg).eval()
    d = Dims.of(cfg)
    flat = Importance(hidden=torch.rand(d.hidden), ffn=torch.rand(d.layers, d.ffn), heads=torch.rand(d.layers, d.heads),
                      layers=torch.rand(d.layers))
    student = prune_width(copy.deepcopy(teacher), flat, WidthTarget(hidden_size=d.hidden * 3 // 4 // 64 * 64,
                                                                    intermediate_size=d.ffn * 2 // 3)).train()
    for p in teacher.parameters():
        p.requires_grad_(False)
    ids = torch.randint(0, args.vocab, (args.batch_size, args.seq_len))
    objective = Objective(student, teacher, TrainConfig(chunk_size=1024)).train()

    def teacher_forward():
        with torch.no_grad():
            teacher(input_ids=ids, use_cache=False)

    def student_forward_backward():
        student(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        student.zero_grad(set_to_none=True)

    def distill_step():
        objective(ids)["loss"].backward()
        student.zero_grad(set_to_none=True)

    t_teacher = best_time(teacher_forward, args.repeats)
    t_student = best_time(student_forward_backward, args.repeats)
    t_step = best_time(distill_step, args.repeats)
    tokens = ids.numel()
    print(f"teacher {sum(p.numel() for p in teacher.parameters()) / 1e6:.1f}M, student "
          f"{sum(p.numel() for p in student.parameters()) / 1e6:.1f}M params, vocab {args.vocab}, batch "
          f"{args.batch_size}x{args.seq_len}, {torch.get_num_threads()} threads")
    print(f"teacher forward               {t_teacher:7.3f} s")
    print(f"student forward+backward      {t_student:7.3f} s")
    print(f"distillation step (chunked KD) {t_step:6.3f} s  = {tokens / t_step:,.0f} tokens/s")
    print(f"step / (teacher fwd + student fwd-bwd) = {t_step / (t_teacher + t_student):.3f}x  (target <= 1.1x)")


if __name__ == "__main__":
    main()
