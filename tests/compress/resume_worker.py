"""One process of a torchrun distillation for tests/compress/test_train.py: stops after `--stop-after` steps
(as if killed) or resumes, so that a sharded checkpoint is written by every process and read back.

    torchrun --nproc_per_node 2 tests/compress/resume_worker.py TEACHER STUDENT DATA OUT [--stop-after N] [--resume]
"""

import argparse

from minitron.compress.train import fit
from minitron.compress.train_config import TrainConfig

parser = argparse.ArgumentParser()
parser.add_argument("teacher")
parser.add_argument("student")
parser.add_argument("data")
parser.add_argument("out")
parser.add_argument("--stop-after", type=int)
parser.add_argument("--resume", action="store_true")
args = parser.parse_args()
cfg = TrainConfig(steps=4, seq_len=32, global_batch=4, micro_batch=1, lr=1e-3, min_lr=1e-4, warmup=1, eval_every=4,
                  eval_batches=2, save_every=2, precision="fp32")
fit(args.student, args.data, args.out, cfg, teacher_dir=args.teacher, resume=args.resume, stop_after=args.stop_after)
