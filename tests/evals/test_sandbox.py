"""Each way out of the code-execution sandbox that generated code once found, tried again in each of the
sandbox's modes: every program below exits 0 only if the escape failed.

Modes, as `evals/sandbox.isolation()` picks them:
- this evaluator, with this interpreter (as root here: a pids cgroup, or `nobody` if nobody can run it);
- a root evaluator whose interpreter `nobody` can run (programs run as nobody);
- a non-root evaluator (the kernel's process limit, RLIMIT_NPROC, holds).
The last two run the evaluator (evals/code_exec.py, copied out) in a subprocess with the system's Python; they
are skipped where there is none that user nobody can run, or when the tests do not run as root. Everything is
skipped where the kernel gives no user namespaces (the run record then says so).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from minitron.core import errors
from minitron.evals import code_exec, sandbox
from minitron.evals.sandbox import NOBODY, isolation

pytestmark = pytest.mark.skipif(not isolation(sys.executable).namespaces,
                                reason=f"no namespaces here: {isolation(sys.executable).reason}")

SECRET = "hunter2-in-the-parent"

# EVALUATOR, TARGET, PORT and MARKER are filled in for each run (`scene`); EVALUATOR by the evaluator itself.
ESCAPES = {
    "read the evaluator's environment": (
        "import glob\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        f"        assert b'{SECRET}' not in open(path, 'rb').read(), path\n"
        "    except (PermissionError, ProcessLookupError):\n"
        "        pass\n"),
    "signal the evaluator": (
        "import os\ntry:\n    os.kill(EVALUATOR, 0)\nexcept ProcessLookupError:\n    pass\n"
        "else:\n    raise SystemExit('the evaluator is visible')\n"
        "os.kill(os.getppid(), 9) if os.getppid() > 1 else None\n"),
    "leave a setsid grandchild running": "import subprocess\nsubprocess.Popen(['setsid', 'sleep', 'MARKER'])\n",
    "write outside its folder": (
        "try:\n    open('TARGET', 'w').write('x')\nexcept OSError:\n    pass\n"
        "else:\n    raise SystemExit('wrote outside')\n"),
    "fork past the process limit": (
        "import os, time\n"
        "try:\n"
        f"    for _ in range({code_exec.MAX_PROCESSES * 3}):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(2)\n"
        "            os._exit(0)\n"
        "except OSError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('forked past the limit')\n"),
    "fill the disk with files under the per-file limit": (
        "try:\n"
        f"    for i in range({code_exec.DISK_BYTES // (code_exec.FILE_BYTES - 2**20) + 1}):\n"
        f"        open(f'f{{i}}', 'wb').write(b'0' * {code_exec.FILE_BYTES - 2**20})\n"
        "except OSError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no quota')\n"),
    "open a socket to this machine": (
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', PORT), timeout=2)\n"
        "except OSError:\n    pass\nelse:\n    raise SystemExit('connected')\n"),
}

# The evaluator in a subprocess: reads {name: program}, prints {"isolation": [...], "escaped": {name: why}}.
DRIVER = """
import json, os, sys
from minitron.evals import code_exec
from minitron.evals.sandbox import isolation
os.environ[code_exec.ALLOW_ENV] = "1"
escapes = json.load(sys.stdin)
escaped = {}
for name, program in escapes.items():
    result = code_exec.run_program(program.replace("EVALUATOR", str(os.getpid())), timeout=20)
    escaped[name] = "" if result.passed else f"{result.status}: {result.detail[-300:]}"
print(json.dumps({"isolation": isolation().describe(), "escaped": escaped}))
"""


def _system_python() -> str | None:
    """A Python 3.10+ outside this one's folder that user nobody can run, or None."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3")):
        if not candidate or not os.path.exists(candidate):
            continue
        check = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", candidate, "-c",
                 "import sys; assert sys.version_info >= (3, 10)"]
        if subprocess.run(check, capture_output=True).returncode == 0:
            return candidate
    return None


ROOT = os.geteuid() == 0
SYSTEM_PYTHON = _system_python() if ROOT else None
MODES = ["this evaluator", "root evaluator, programs as nobody", "non-root evaluator"]


@pytest.fixture(scope="module")
def evaluator_copy():
    """The evaluator's modules (and nothing else of the package) in a folder every user can read."""
    folder = Path(tempfile.mkdtemp(prefix="minitron-evaluator-"))
    for module in (errors, code_exec, sandbox):
        target = folder / "minitron" / Path(module.__file__).parent.name / Path(module.__file__).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(module.__file__, target)
    for package in ("minitron", "minitron/core", "minitron/evals"):
        (folder / package / "__init__.py").touch()
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def scene():
    """What the escapes aim at: a folder anyone may write to (so only the sandbox stops the write), a listening
    socket, and a sleep length no other process uses."""
    folder = Path(tempfile.mkdtemp(prefix="minitron-escape-"))
    folder.chmod(0o777)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield {"TARGET": str(folder / "escaped.txt"), "PORT": str(server.getsockname()[1]),
               "MARKER": f"{time.time_ns() % 10**6 + 30}.25"}
    assert not (folder / "escaped.txt").exists(), "a program wrote outside its folder"
    shutil.rmtree(folder)


def run(mode: str, program: str, evaluator_copy: Path, monkeypatch) -> tuple[str, list[str]]:
    """(why the escape worked, '' if it failed; the protections the evaluator recorded)."""
    monkeypatch.setenv("MINITRON_TEST_SECRET", SECRET)
    if mode == "this evaluator":
        monkeypatch.setenv(code_exec.ALLOW_ENV, "1")
        result = code_exec.run_program(program.replace("EVALUATOR", str(os.getpid())), timeout=20)
        return ("" if result.passed else f"{result.status}: {result.detail[-300:]}"), isolation().describe()
    if not ROOT:
        pytest.skip("the other modes are entered from a root evaluator")
    if SYSTEM_PYTHON is None:
        pytest.skip("no Python 3.10+ that user nobody can run")
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    command = (as_nobody if mode == "non-root evaluator" else []) + [SYSTEM_PYTHON, "-c", DRIVER]
    done = subprocess.run(command, input=json.dumps({"escape": program}), capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(evaluator_copy)}, cwd=evaluator_copy, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report["escaped"]["escape"], report["isolation"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("escape", ESCAPES)
def test_the_escape_fails(escape, mode, scene, evaluator_copy, monkeypatch):
    program = ESCAPES[escape]
    for token, value in scene.items():
        program = program.replace(token, value)
    escaped, protections = run(mode, program, evaluator_copy, monkeypatch)
    if "no namespaces" in " ".join(protections):
        pytest.skip(f"no namespaces for this evaluator: {protections[-1]}")
    assert not escaped
    time.sleep(0.3)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    assert not [line for line in ps if line.strip() == f"sleep {scene['MARKER']}"], "a grandchild outlived the run"


@pytest.mark.parametrize("mode, limit", [(MODES[1], "nobody"), (MODES[2], "rlimit")])
def test_the_run_record_names_the_protections(mode, limit, evaluator_copy, monkeypatch):
    _, described = run(mode, "pass", evaluator_copy, monkeypatch)
    assert "network namespace (no network)" in described
    assert f"process limit: {limit}" in described


def test_this_evaluators_record_names_a_process_limit():
    described = isolation(sys.executable).describe()
    assert "network namespace (no network)" in described
    assert any(line.startswith("process limit: ") and not line.endswith("none") for line in described)
