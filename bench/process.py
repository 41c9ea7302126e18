"""Engines run as other programs: found on PATH (never installed from here), run with a log and a time limit,
and their failures turned into one clear error instead of a traceback.

TensorRT-LLM and vLLM pin their own torch and transformers, so they usually live in an environment of their
own; putting its `bin/` on PATH is all `minitron bench` needs (`trtllm-bench`, `vllm`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from minitron.core.errors import EngineFailed, EngineUnavailable


def require_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EngineUnavailable(f"`{name}` is not on PATH: {hint}")
    return path


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_logged(cmd: list[str], log: Path, timeout: float | None = None) -> str:
    """Run `cmd`, writing its combined output to `log`; return the output, or raise EngineFailed with its end."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        output = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        log.write_text(output)
        raise EngineFailed(f"`{cmd[0]}` ran past {timeout:.0f} s and was stopped; raise --timeout or shrink the "
                           f"point (--num-requests). Log: {log}") from None
    log.write_text(done.stdout)
    if done.returncode != 0:
        raise EngineFailed(f"`{' '.join(cmd[:3])} ...` failed (exit {done.returncode}). Its last lines:\n"
                           f"{tail(done.stdout)}\nFull log: {log}")
    return done.stdout
