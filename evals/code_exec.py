"""Run model-generated Python programs in resource-limited subprocesses and score them with pass@k.

The code benchmarks (HumanEval, MBPP) score a completion by running it against the problem's tests, which
means executing untrusted, model-written code on this machine. Nothing runs unless the user asked for it:

    export MINITRON_ALLOW_CODE_EXECUTION=1          # what `--allow-code-execution` on the CLI sets
    run_program("assert 1 + 1 == 2").passed          # True
    run_many([prog_a, prog_b, prog_a])              # thread pool; prog_a is executed once
    pass_at_k(n=20, c=5, k=1)                        # 0.25

What each program gets:
- its own interpreter (`python -I -B`: isolated mode ignores PYTHON* variables, the user site and the
  current folder, and -B writes no bytecode), started in a new session so that the whole process group can
  be killed;
- a fresh folder as working directory, HOME and TMPDIR, removed afterwards; its output goes to files rather
  than pipes, so a program printing in a loop cannot fill this process's memory;
- a minimal environment (PATH, locale, one BLAS thread: no proxies, tokens or credentials from ours);
- a wall-clock timeout, after which its process group is killed with SIGKILL;
- resource limits: address space (2 GiB), CPU seconds, file size, processes, open files, no core dumps;
- on Linux with user namespaces (evals/sandbox.py): no view of other processes, no network, a read-only
  file system except its folder (a tmpfs of 128 MiB for all its files), no capabilities, and as `nobody`
  when the evaluator is root. `isolation()` tells which, and each eval run records it.

What it does NOT protect against: without namespaces (macOS, kernels with user namespaces disabled) the
program runs as this user, sees the whole file system and network, and can read, change or delete anything
this user can. With them it is still not a VM: a kernel exploit gets out. A program that calls `exit(0)`
before the asserts counts as passing, as in the reference harnesses.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from minitron.core.errors import BadInput
from minitron.evals.sandbox import isolated

ALLOW_ENV = "MINITRON_ALLOW_CODE_EXECUTION"
DEFAULT_TIMEOUT = 10.0
MEMORY_BYTES = 2 * 2**30
FILE_BYTES = 64 * 2**20
DISK_BYTES = 128 * 2**20
"""All of a program's files together, where namespaces give it a tmpfs of its own (evals/sandbox.py)."""
MAX_PROCESSES = 64
MAX_OPEN_FILES = 128
DETAIL_CHARS = 2000


class CodeExecutionNotAllowed(BadInput):
    """Raised instead of running model-generated code that the user has not agreed to run."""


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    status: str  # 'passed' | 'failed' (non-zero exit) | 'timeout' | 'error' (killed by a signal)
    detail: str  # the tail of stderr, or why it was stopped


def check_allowed() -> None:
    """Refuse unless the user opted in: a code benchmark executes whatever the model wrote."""
    if os.environ.get(ALLOW_ENV) != "1":
        raise CodeExecutionNotAllowed(
            "Code benchmarks (HumanEval, MBPP) execute model-generated programs on this machine. Pass "
            f"--allow-code-execution (or set {ALLOW_ENV}=1) to run them; the programs run in resource-limited "
            "subprocesses, which is not a security sandbox, so prefer a disposable container."
        )


def _launcher(timeout: float) -> str:
    """Python source that sets the limits in the child and then runs `program.py` as `__main__`.

    The limits are set by the child itself rather than in a `preexec_fn`, because Python code between fork
    and exec can deadlock when the parent has other threads, and `run_many` calls this from a thread pool.
    Limits already lower than ours (a hard cap set by the administrator) are kept.
    """
    cpu = math.ceil(timeout)
    limits = {
        "RLIMIT_AS": (MEMORY_BYTES, MEMORY_BYTES),
        "RLIMIT_CPU": (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL one second later
        "RLIMIT_FSIZE": (FILE_BYTES, FILE_BYTES),
        "RLIMIT_NPROC": (MAX_PROCESSES, MAX_PROCESSES),
        "RLIMIT_NOFILE": (MAX_OPEN_FILES, MAX_OPEN_FILES),
        "RLIMIT_CORE": (0, 0),  # a crash under these limits must not litter the disk with core files
    }
    return (
        "import resource, runpy, sys\n"
        f"for name, (soft, hard) in {limits!r}.items():\n"
        "    which = getattr(resource, name)\n"
        "    cap = resource.getrlimit(which)[1]\n"
        "    if cap != resource.RLIM_INFINITY:\n"
        "        soft, hard = min(soft, cap), min(hard, cap)\n"
        "    resource.setrlimit(which, (soft, hard))\n"
        "sys.argv = ['program.py']\n"
        "runpy.run_path('program.py', run_name='__main__')\n"
    )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_program(program: str, timeout: float = DEFAULT_TIMEOUT) -> ExecResult:
    """Run one program to completion or timeout; `passed` means it exited with status 0."""
    check_allowed()
    with tempfile.TemporaryDirectory(prefix="minitron-exec-", ignore_cleanup_errors=True) as tmp:
        folder, work = Path(tmp), Path(tmp, "work")
        work.mkdir()
        (folder / "program.py").write_text(program)
        argv = [sys.executable, "-I", "-B", "-c", _launcher(timeout)]
        with isolated(argv, folder, work, DISK_BYTES, MAX_PROCESSES) as (command, setup), \
                open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
            if not setup:  # no namespaces: the program runs in `work` as it is
                shutil.copy(folder / "program.py", work / "program.py")
            env = {"PATH": os.defpath, "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8",
                   "OMP_NUM_THREADS": "1", **setup}
            proc = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            # Also after a normal exit: background children it left behind must not outlive the run.
            _kill_group(proc.pid)
            proc.wait()
        stderr = (folder / "stderr.txt").read_bytes()[-DETAIL_CHARS:].decode(errors="replace").strip()
    if timed_out:
        return ExecResult(False, "timeout", f"timed out after {timeout:g} s")
    if proc.returncode == 0:
        return ExecResult(True, "passed", "")
    if proc.returncode > 0:
        return ExecResult(False, "failed", stderr)
    sig = signal.Signals(-proc.returncode)
    if sig == signal.SIGXCPU:
        return ExecResult(False, "timeout", f"CPU time limit ({math.ceil(timeout)} s) exceeded")
    return ExecResult(False, "error", f"killed by {sig.name}" + (f"\n{stderr}" if stderr else ""))


CACHE_ENTRIES = 4096
"""(program, timeout) -> result, the most recent entries. Sampled completions repeat a lot (a confident model gives
the same program in most of its n=20 samples), and one evaluation scores each program once per metric call; the
bound keeps a long process (a sweep of checkpoints) from growing without end."""
_cache: OrderedDict[tuple[str, float], ExecResult] = OrderedDict()
_cache_lock = threading.Lock()


def run_many(programs: list[str], workers: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[ExecResult]:
    """Run programs in parallel subprocesses (threads only wait on them), each distinct program once."""
    check_allowed()
    with _cache_lock:
        known = {p: _cache[(p, timeout)] for p in dict.fromkeys(programs) if (p, timeout) in _cache}
    todo = [p for p in dict.fromkeys(programs) if p not in known]
    if todo:
        workers = min(workers or os.cpu_count() or 1, len(todo))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            known |= dict(zip(todo, pool.map(lambda p: run_program(p, timeout), todo)))
    with _cache_lock:
        for program, result in known.items():
            _cache[(program, timeout)] = result
            _cache.move_to_end((program, timeout))
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return [known[p] for p in programs]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 from n samples of which c passed: 1 - C(n-c, k) / C(n, k).

    Computed as a product, because the binomials overflow floats for the n of a real evaluation.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise BadInput(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
