"""Host memory of each process of a 2-process distillation (gloo, FSDP2): only rank 0 may hold the full models.

    .venv/bin/python tests/benchmarks/rank_memory.py          # about 2 minutes on 2 cores

Not a test: it measures memory. It writes a Llama-shaped teacher (hidden 1024, 8 layers) and student (hidden 768,
8 layers), fp32, then runs `minitron distill` for 2 steps as two processes started by
hand (RANK, WORLD_SIZE, MASTER_ADDR as torchrun sets them) and as one process, and reads each process's peak
resident memory from the kernel when it exits (`os.wait4`). A process that only imports what `distill` imports
gives the baseline. Rank 1 builds both models on the meta device and receives its shards from rank 0, so its
peak above the baseline should stay under one full copy of the models' weights; rank 0 reads them whole.
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


def _peak(command: list[str], env: dict) -> int:
    """Peak resident bytes of `command` (one process), from the kernel's accounting at its exit."""
    return _peaks([command], [env])[0]


def _peaks(commands: list[list[str]], envs: list[dict]) -> list[int]:
    """Peak resident bytes of each of `commands`, run at once."""
    procs = [subprocess.Popen(c, env=e, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for c, e in zip(commands, envs)]
    peaks = []
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{proc.args[:4]} failed:\n{proc.stderr.read().decode()[-2000:]}")
        peaks.append(usage.ru_maxrss * 1024)
    return peaks


def main() -> None:
    import torch
    from minitron.compress.tokenizer import train_tokenizer
    from minitron.core.model_io import save_checkpoint
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import stdlib_texts

    root = Path(tempfile.mkdtemp(prefix="rank-memory-"))
    (root / "data.txt").write_text("\n\n".join(stdlib_texts(12)))
    tokenizer = train_tokenizer(stdlib_texts(), vocab_size=VOCAB)
    weights = 0
    for name, hidden in (("teacher", 1024), ("student", 768)):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(llama_config(hidden, 8, VOCAB), dtype=torch.float32)
        weights += sum(p.numel() * 4 for p in model.parameters())
        save_checkpoint(model, tokenizer, root / name)
        del model
    args = ["distill", "--teacher", root / "teacher", "--student", root / "student", "--data", root / "data.txt",
            "--steps", 2, "--seq-len", 128, "--global-batch", 4, "--micro-batch", 2, "--eval-every", 2,
            "--eval-batches", 1, "--precision", "fp32", "--device", "cpu"]
    base = [sys.executable, "-m", "minitron"] + [str(a) for a in args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    baseline = _peak([sys.executable, "-c", "import minitron.compress.train, transformers, torch.distributed"], env)
    one = _peak(base + ["--out", str(root / "one")], env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    envs = [{**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(port)} for r in (0, 1)]
    rank0, rank1 = _peaks([base + ["--out", str(root / "two")]] * 2, envs)
    gb = 1e9
    print(f"teacher + student fp32 weights: {weights / gb:.2f} GB; baseline process (imports only): "
          f"{baseline / gb:.2f} GB")
    for label, peak in (("one process", one), ("rank 0 of 2", rank0), ("rank 1 of 2", rank1)):
        print(f"{label:12s} peak {peak / gb:.2f} GB, {(peak - baseline) / gb:.2f} GB above the baseline "
              f"= {(peak - baseline) / weights:.2f}x the models' weights")


if __name__ == "__main__":
    main()
