"""Host memory of each process of a 2-process distillation (gloo, FSDP2): only rank 0 may hold the full models.

    .venv/bin/python tests/benchmarks/rank_memory.py          # about 2 minutes on 2 cores

Not a test: it measures memory. It writes a Llama-shaped teacher (hidden 1024, 8 layers) and student (hidden 768,
8 layers), fp32, then runs `minitron distill` for 2 steps as two processes started by hand (RANK, WORLD_SIZE,
MASTER_ADDR as torchrun sets them) and as one process. Each process reports its peak resident memory twice: once
the models are loaded and sharded (VmHWM when `compress.distributed.shard` returns: the phase where rank 0 reads
the weights and the others must not), and at its exit (`os.wait4`, training included: AdamW's sharded moments
alone are twice an fp32 copy over 2 processes). A process that only imports what `distill` imports gives the
baseline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from common import llama_config

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 384


SHARDED = "peak after sharding:"
# `minitron` with `shard` wrapped so that each process prints its peak so far once the models are in place
WORKER = f"""
import sys
import minitron.compress.train as train
shard = train.shard
def reporting_shard(*args, **kwargs):
    shard(*args, **kwargs)
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) * 1024
    print("{SHARDED}", peak, file=sys.stderr, flush=True)
train.shard = reporting_shard
from minitron import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def _peak(command: list[str], env: dict) -> int:
    """Peak resident bytes of `command` (one process), from the kernel's accounting at its exit."""
    return _peaks([command], [env])[0][0]


def _peaks(commands: list[list[str]], envs: list[dict]) -> list[tuple[int, int | None]]:
    """(peak at exit, peak once sharded if it says) of each of `commands`, run at once."""
    procs = [subprocess.Popen(c, env=e, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for c, e in zip(commands, envs)]
    peaks = []
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        err = proc.stderr.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{proc.args[:4]} failed:\n{err[-2000:]}")
        sharded = [int(line.split()[-1]) for line in err.splitlines() if line.startswith(SHARDED)]
        peaks.append((usage.ru_maxrss * 1024, sharded[0] if sharded else None))
    return peaks


def prepare(root: Path) -> None:
    """Write the data, teacher and student into `root` and print their fp32 weight bytes (run in a child, so
    that this process stays small: a child's peak resident memory starts from its parent's at the fork)."""
    import torch
    from minitron.compress.tokenizer import train_tokenizer
    from minitron.core.model_io import save_checkpoint
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import stdlib_texts

    (root / "data.txt").write_text("\n\n".join(stdlib_texts(12)))
    tokenizer = train_tokenizer(stdlib_texts(), vocab_size=VOCAB)
    weights = 0
    for name, hidden in (("teacher", 1024), ("student", 768)):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(llama_config(hidden, 8, VOCAB), dtype=torch.float32)
        weights += sum(p.numel() * 4 for p in model.parameters())
        save_checkpoint(model, tokenizer, root / name)
    print(weights)


def main() -> None:
    if sys.argv[1:2] == ["--prepare"]:
        prepare(Path(sys.argv[2]))
        return
    root = Path(tempfile.mkdtemp(prefix="rank-memory-"))
    done = subprocess.run([sys.executable, __file__, "--prepare", str(root)], capture_output=True, text=True,
                          check=True)
    weights = int(done.stdout.split()[-1])
    args = ["distill", "--teacher", root / "teacher", "--student", root / "student", "--data", root / "data.txt",
            "--steps", 2, "--seq-len", 128, "--global-batch", 4, "--micro-batch", 2, "--eval-every", 2,
            "--eval-batches", 1, "--precision", "fp32", "--device", "cpu"]
    base = [sys.executable, "-c", WORKER] + [str(a) for a in args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    baseline = _peak([sys.executable, "-c", "import minitron.compress.train, transformers, torch.distributed"], env)
    one = _peaks([base + ["--out", str(root / "one")]], [env])[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    envs = [{**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(port)} for r in (0, 1)]
    rank0, rank1 = _peaks([base + ["--out", str(root / "two")]] * 2, envs)
    gb = 1e9
    print(f"teacher + student fp32 weights: {weights / gb:.2f} GB; baseline process (imports only): "
          f"{baseline / gb:.2f} GB; above the baseline:")
    print(f"{'process':12s} {'once sharded':>14s} {'at exit':>9s}")
    for label, (end, sharded) in (("one process", one), ("rank 0 of 2", rank0), ("rank 1 of 2", rank1)):
        once = "-" if sharded is None else f"{(sharded - baseline) / gb:+.3f} GB"
        print(f"{label:12s} {once:>14s} {(end - baseline) / gb:+8.3f} GB")
    print(f"rank 1 once sharded / the models' weights: {(rank1[1] - baseline) / weights:.2f}x "
          f"(rank 0: {(rank0[1] - baseline) / weights:.2f}x)")


if __name__ == "__main__":
    main()
