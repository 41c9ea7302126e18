"""Output folders and what they record: one atomic write, run records with provenance, JSON Lines logs.

    with output_dir(out, overwrite) as tmp:       # built beside `out`, renamed into place only when complete
        save_checkpoint(model, tokenizer, tmp)
        write_record(tmp, "prune-width", seed=0, target=...)   # minitron.json: what ran, on what, with which settings

Every stage writes through `output_dir`, so an interrupted run never leaves a half-written folder that a later
stage could mistake for a finished one; single files go through `atomic_file` / `atomic_write`. Logs that grow
line by line (training metrics, throughput records) are read by `read_jsonl`, which forgives only a last line
cut short.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from minitron.core.errors import BadInput, OutputExists
from minitron.core.precision import cpu_has_native_bf16

log = logging.getLogger(__name__)

RECORD_NAME = "minitron.json"


def refuse_overlap(out: str | os.PathLike, reads: Iterable) -> None:
    """Fail when `out` is, holds or lies inside one of the local paths a command `reads` (hub ids and missing
    paths are left to their loaders): replacing it would destroy an input, with or without --overwrite."""
    target = Path(out).expanduser().resolve()
    for source in reads:
        path = Path(source).expanduser() if source is not None else None
        if path is None or not path.exists():
            continue
        path = path.resolve()
        if target == path or target in path.parents or path in target.parents:
            relation = "is" if target == path else "holds" if target in path.parents else "lies inside"
            raise BadInput(f"the output {out} {relation} the input {source}: writing it would destroy what the "
                           "command reads; choose an --out outside every input")


def check_output_dir(out: str | os.PathLike, overwrite: bool, reads: Iterable = ()) -> Path:
    """Fail before any heavy work when `out` overlaps an input (`refuse_overlap`), or exists and `overwrite` is
    not set."""
    refuse_overlap(out, reads)
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExists(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    return out


@contextlib.contextmanager
def folder_lock(out: str | os.PathLike):
    """Hold an advisory lock on writing `out` (a hidden `.NAME.lock` beside it, holding the writer's PID): a
    second process that tries to write the same folder is refused, naming the first, instead of mixing files."""
    import fcntl

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputExists(f"another process (PID {holder}) is writing {out}; wait for it to finish or stop "
                               "it, or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def _clear_leftovers(out: Path) -> None:
    """Remove the temporary folders that killed writers of `out` left beside it (their PID is gone)."""
    for leftover in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        kind, _, rest = leftover.name[len(out.name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.info("removing %s, left by a writer that was stopped", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


@contextlib.contextmanager
def output_dir(out: str | os.PathLike, overwrite: bool = False, reads: Iterable = ()):
    """Yield a temporary folder beside `out`; on success it replaces `out`, on error it is removed. `reads` are
    the command's inputs, which `out` may not overlap (`check_output_dir`); a second writer of `out` is refused
    (`folder_lock`)."""
    out = check_output_dir(out, overwrite, reads)
    with folder_lock(out):
        _clear_leftovers(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the result from the user's group
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)


def provenance(seed: int | None = None) -> dict:
    """Where a result came from: git sha, library versions, hardware, seed, time."""
    import transformers

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {
        "git_sha": sha,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "libraries": _versions(LIBRARIES),
        "hardware": {"cpu": _cpu_model(), "cpu_flags": _cpu_flags(), "cpu_count": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(),
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "seed": seed,
        "command": " ".join(sys.argv),
    }


LIBRARIES = ("numpy", "tokenizers", "safetensors", "accelerate", "lm_eval", "nvidia-modelopt", "gguf")
"""Besides torch and transformers, the installed packages whose versions can change a number."""
NUMERIC_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
"""The instruction sets that decide which kernels torch runs, and so the order of a float sum."""


def _versions(names: tuple[str, ...]) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in NUMERIC_CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def _cpu_model() -> str:
    """The CPU's model name where the kernel tells it (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_record(folder: str | os.PathLike, stage: str, seed: int | None = None, **fields) -> dict:
    """Write the stage's self-description (`minitron.json`): what ran, on what, with which settings."""
    record = {"stage": stage, **fields, "provenance": provenance(seed)}
    Path(folder, RECORD_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the toolkit caches what it derives (token streams, converted GGUF files, downloaded wheels)."""
    return Path(cache_dir or os.environ.get("MINITRON_CACHE") or "~/.cache/minitron").expanduser()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """Yield a temporary path beside `path` to write one file to; on success it replaces `path` (a rename, so a
    reader sees the old file or the new one, never half of it), on error it is removed. Unique per process, so
    two processes writing the same entry never mix their bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write one file whole or not at all (`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def read_jsonl(path: str | os.PathLike, what: str = "record") -> list[dict]:
    """Every record of a JSON Lines log that is still being appended to. A last line without its newline is a
    write cut short (a kill, a full disk) and is skipped with a warning; any other bad line is an error."""
    path = Path(path)
    text = path.read_text()
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines) and not text.endswith("\n"):
                log.warning("%s:%d is incomplete (an interrupted write); ignoring it", path, number)
                continue
            raise BadInput(f"{path}:{number} is not valid JSON ({err.msg}); each line must be one {what}: "
                           "remove that line or the file") from None
    return records
