"""Peak memory of the KD loss, naive full-vocabulary logits vs `chunked_kd_loss`, forward + backward, on CPU.

    .venv/bin/python tests/benchmarks/kd_loss_memory.py                        # Llama-3 vocab, 2048 tokens
    .venv/bin/python tests/benchmarks/kd_loss_memory.py --chunk-sizes 1024,512,256

Not a test (it needs ~8 GB of RAM and a minute or two): it backs the claim that the chunked loss is worth
its complexity. Setup: vocabulary 128256, 2048 tokens, student and teacher hidden size 1024, fp32 hidden
states and lm_head weights, temperature 1.

Method: each variant runs in a fresh subprocess, so allocator caches and earlier peaks cannot leak between
them. The child builds its inputs, reads its current resident set size (RSS, /proc/self/statm), runs the loss
forward and backward, and reports the peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`) minus that baseline:
the memory the loss itself needed, including the lm_head weight gradient that both variants produce. Tensors
this large are mmap'ed by the allocator and returned on free, so RSS follows live tensors closely; it
overstates a GPU caching allocator's fragmentation-free peak by at most the thread pools' scratch space.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VOCAB, TOKENS, HIDDEN_STUDENT, HIDDEN_TEACHER = 128256, 2048, 1024, 1024
TARGET_RATIO = 0.25


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(variant: str, chunk_size: int) -> dict:
    """Run one variant in this (fresh) process and return its peak extra memory in bytes and its time."""
    import torch
    from minitron.compress.kd_loss import chunked_kd_loss
    from minitron.core.measure import forward_kl

    torch.manual_seed(0)
    s_hidden = torch.randn(1, TOKENS, HIDDEN_STUDENT, requires_grad=True)
    s_weight = torch.randn(VOCAB, HIDDEN_STUDENT).mul_(0.02).requires_grad_()  # in place: no earlier peak
    t_hidden = torch.randn(1, TOKENS, HIDDEN_TEACHER)
    t_weight = torch.randn(VOCAB, HIDDEN_TEACHER).mul_(0.02)
    before = _rss_bytes()
    # ru_maxrss is a high-water mark since the process began: a setup peak above the baseline would hide
    # part of the loss's own peak.
    if _peak_bytes() - before > 64 * 2**20:
        raise RuntimeError("the setup peaked above the baseline; the measurement would understate the loss")
    start = time.perf_counter()
    if variant == "naive":
        with torch.no_grad():
            t_logits = t_hidden @ t_weight.T
        loss = forward_kl(s_hidden @ s_weight.T, t_logits)
    else:
        loss = chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, chunk_size=chunk_size).loss
    loss.backward()
    seconds = time.perf_counter() - start
    assert s_weight.grad is not None and s_hidden.grad is not None
    return {"peak": _peak_bytes() - before, "seconds": seconds, "loss": loss.item()}


def run(variant: str, chunk_size: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--chunk-size", str(chunk_size)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-sizes", default="1024,256", help="comma-separated chunk sizes to measure")
    parser.add_argument("--child", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    parser.add_argument("--chunk-size", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.chunk_size)))
        return 0

    gib = 2**30
    print(f"vocab {VOCAB}, {TOKENS} tokens, hidden {HIDDEN_STUDENT}/{HIDDEN_TEACHER}, fp32, forward + backward")
    print(f"one fp32 [tokens, vocab] logits tensor: {TOKENS * VOCAB * 4 / gib:.2f} GiB; "
          f"the lm_head weight gradient: {VOCAB * HIDDEN_STUDENT * 4 / gib:.2f} GiB")
    naive = run("naive")
    print(f"naive                 peak extra {naive['peak'] / gib:6.2f} GiB  {naive['seconds']:5.1f} s  "
          f"loss {naive['loss']:.6f}")
    ok = True
    for chunk_size in (int(c) for c in args.chunk_sizes.split(",")):
        res = run("chunked", chunk_size)
        ratio = res["peak"] / naive["peak"]
        ok &= ratio <= TARGET_RATIO
        print(f"chunked (chunk {chunk_size:5d}) peak extra {res['peak'] / gib:6.2f} GiB  {res['seconds']:5.1f} s  "
              f"loss {res['loss']:.6f}  ratio chunked/naive {ratio:.3f} "
              f"({'meets' if ratio <= TARGET_RATIO else 'misses'} the {TARGET_RATIO} target)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
