"""Isolation of model-generated programs on Linux, with the kernel's namespaces (util-linux `unshare`).

    isolation()                                         # what this machine allows, detected once
    with isolated(argv, stage, work, quota, procs) as (command, env):   # argv run inside it
        subprocess.Popen(command, env={**env, ...})     # `work` its only writable folder

Inside, the program gets:
- its own PID namespace (it sees only its own processes, not the evaluator's /proc/<pid>/environ, and cannot
  signal the evaluator; when the program's first process ends, the kernel kills everything it started, a
  `setsid` grandchild included);
- its own network namespace with no interface up (no sockets to this machine or any other);
- its own mount namespace where every file system is read-only except `work`, a tmpfs of `quota_bytes` (all
  its files together, however many);
- its own user namespace, with every capability dropped before the program starts (it cannot remount,
  mount or unshare again);
- a process limit that holds for a root evaluator too (the kernel does not apply RLIMIT_NPROC to root): the
  programs run as `nobody` where nobody can run the interpreter, else in a pids cgroup of their own.

Where `unshare` is missing or user namespaces are disabled (macOS, some hardened kernels), `isolation()` says
so and programs run with the resource limits alone (evals/code_exec.py); every eval run records which.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
NAMESPACES = ["--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--net",
              "--ipc", "--uts"]
DROP_CAPABILITIES = ["setpriv", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all"]

# Runs as the namespace's root, before the program: everything read-only, then a tmpfs of the quota at $WORK
# with the program copied in from $STAGE. `|| true`: a mount point the kernel will not remount (a locked one
# that is read-only already) is no way out.
SETUP = r"""set -e
for point in $(cut -d' ' -f5 /proc/self/mountinfo); do
    mount -o remount,bind,ro "$point" 2>/dev/null || true
done
mount -t tmpfs -o "size=$QUOTA,mode=0777" tmpfs "$WORK"
cp "$STAGE/program.py" "$WORK/program.py"
cd "$WORK"
exec "$@"
"""


@dataclass(frozen=True)
class Isolation:
    namespaces: bool
    """PID, network, mount, IPC and user namespaces, a read-only file system and a tmpfs quota."""
    process_limit: str
    """How the process limit holds: rlimit (a non-root evaluator), nobody (a root evaluator runs programs as
    nobody), cgroup (a root evaluator whose interpreter nobody cannot run: a pids cgroup per program), or none."""
    reason: str = ""
    """Why there are no namespaces, when there are none."""

    def describe(self) -> list[str]:
        """The protections in force, for run records."""
        limits = ["own interpreter and process group, killed at the timeout", "minimal environment",
                  "rlimits: memory, CPU seconds, file size, open files",
                  f"process limit: {self.process_limit}"]
        if not self.namespaces:
            return limits + [f"no namespaces ({self.reason}): the program can read and write what this user can, "
                             "and reach the network"]
        return limits + ["PID namespace (no view of other processes; its descendants die with it)",
                         "network namespace (no network)", "read-only file system except a size-limited tmpfs",
                         "user namespace without capabilities"]


def _runs(command: list[str]) -> str:
    """'' when `command` exits 0, else why not."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    return "" if done.returncode == 0 else done.stderr.strip()[:200] or f"exit {done.returncode}"


@functools.cache
def isolation(interpreter: str = sys.executable) -> Isolation:
    """What this machine allows for programs run by `interpreter`, found by trying once."""
    missing = [tool for tool in ("unshare", "setpriv") if shutil.which(tool) is None]
    root = os.geteuid() == 0
    if missing:
        return Isolation(False, "none" if root else "rlimit", f"{' and '.join(missing)} not found (util-linux)")
    interpreter = os.path.realpath(interpreter)
    failed = _runs(_prefix(False) + [interpreter, "-c", "pass"])
    if failed:
        return Isolation(False, "none" if root else "rlimit", f"user namespaces unavailable: {failed}")
    if not root:
        return Isolation(True, "rlimit")
    if not _runs(_prefix(True) + [interpreter, "-c", "pass"]):
        return Isolation(True, "nobody")
    return Isolation(True, "cgroup" if _pids_cgroups() else "none")


def _pids_cgroups() -> Path | None:
    """Where this process may create pids cgroups (cgroup v1's pids hierarchy, or v2 with pids delegated)."""
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").is_file() and os.access(v1, os.W_OK):
        return v1
    v2 = Path("/sys/fs/cgroup")
    own = next((line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::")),
               None) if Path("/proc/self/cgroup").is_file() else None
    if own is not None and (v2 / "cgroup.controllers").is_file():
        parent = v2 / own.strip("/")
        control = parent / "cgroup.subtree_control"
        if control.is_file() and "pids" in control.read_text().split() and os.access(parent, os.W_OK):
            return parent
    return None


def _prefix(as_nobody: bool) -> list[str]:
    nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if as_nobody else []
    return nobody + ["unshare", *NAMESPACES]


@contextlib.contextmanager
def isolated(argv: list[str], stage: Path, work: Path, quota_bytes: int, max_processes: int):
    """Yields (command, environment) that run `argv` isolated, with `stage/program.py` copied into `work` (its
    working folder, a tmpfs of `quota_bytes`); without namespaces, `argv` itself. A pids cgroup made for it
    is removed afterwards."""
    found = isolation(argv[0])
    if not found.namespaces:
        yield argv, {}
        return
    env = {"STAGE": str(stage), "WORK": str(work), "QUOTA": str(quota_bytes)}
    command = ["sh", "-c", SETUP, "setup", *DROP_CAPABILITIES, os.path.realpath(argv[0]), *argv[1:]]
    if found.process_limit == "nobody":  # nobody must read the program and enter the folders
        for path in (stage, work):
            path.chmod(0o755)
        (stage / "program.py").chmod(0o644)
    if found.process_limit != "cgroup":
        yield _prefix(found.process_limit == "nobody") + command, env
        return
    group = Path(tempfile.mkdtemp(prefix="minitron-exec-", dir=_pids_cgroups()))
    try:
        (group / "pids.max").write_text(str(max_processes))
        # the shell joins the group before it starts anything, so every descendant is counted
        yield ["sh", "-c", 'echo 0 > "$PIDS_GROUP/cgroup.procs" && exec "$@"', "join", *_prefix(False), *command], {
            **env, "PIDS_GROUP": str(group)}
    finally:
        for _ in range(50):  # empty once the namespace's processes are reaped, a moment after the kill
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.02)
