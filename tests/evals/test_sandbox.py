"""Each way out of the code-execution sandbox that generated code once found, tried again: every program below
exits 0 only if the escape failed. Skipped where the kernel gives no user namespaces (the run record says so)."""

import os
import socket
import subprocess
import sys
import time

import pytest
from minitron.evals import code_exec
from minitron.evals.sandbox import isolation

pytestmark = pytest.mark.skipif(not isolation(sys.executable).namespaces,
                                reason=f"no namespaces here: {isolation(sys.executable).reason}")


@pytest.fixture(autouse=True)
def allowed(monkeypatch):
    monkeypatch.setenv(code_exec.ALLOW_ENV, "1")


def escaped(program: str) -> str:
    """'' when the program (which exits 0 only when its escape failed) passed, else what it reported."""
    result = code_exec.run_program(program, timeout=20)
    return "" if result.passed else f"{result.status}: {result.detail[-300:]}"


def test_the_evaluators_environment_is_out_of_sight(monkeypatch):
    monkeypatch.setenv("MINITRON_TEST_SECRET", "hunter2-in-the-parent")
    assert not escaped("import glob\n"
                       "for path in glob.glob('/proc/*/environ'):\n"
                       "    try:\n"
                       "        assert b'hunter2-in-the-parent' not in open(path, 'rb').read(), path\n"
                       "    except (PermissionError, ProcessLookupError):\n"
                       "        pass\n")


def test_the_evaluator_cannot_be_signalled():
    assert not escaped(f"import os\ntry:\n    os.kill({os.getpid()}, 0)\nexcept ProcessLookupError:\n    pass\n"
                       "else:\n    raise SystemExit('the evaluator is visible')\n"
                       "os.kill(os.getppid(), 9) if os.getppid() > 1 else None\n")


def test_a_setsid_grandchild_dies_with_the_program():
    marker = f"{time.time_ns() % 10**6 + 30}.25"  # a sleep length no other process uses
    assert not escaped(f"import subprocess\nsubprocess.Popen(['setsid', 'sleep', '{marker}'])\n")
    time.sleep(0.3)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    assert not [line for line in ps if line.strip() == f"sleep {marker}"]


def test_nothing_outside_its_folder_can_be_written(tmp_path):
    target = tmp_path / "escaped.txt"
    assert not escaped(f"try:\n    open({str(target)!r}, 'w').write('x')\nexcept OSError:\n    pass\n"
                       "else:\n    raise SystemExit('wrote outside')\n")
    assert not target.exists()


def test_a_fork_bomb_stops_at_the_process_limit():
    assert not escaped("import os, time\n"
                       "try:\n"
                       f"    for _ in range({code_exec.MAX_PROCESSES * 3}):\n"
                       "        if os.fork() == 0:\n"
                       "            time.sleep(2)\n"
                       "            os._exit(0)\n"
                       "except OSError:\n"
                       "    pass\n"
                       "else:\n"
                       "    raise SystemExit('forked past the limit')\n")


def test_many_files_under_the_per_file_limit_still_stop_at_the_quota():
    size = code_exec.FILE_BYTES - 2**20
    files = code_exec.DISK_BYTES // size + 1
    assert not escaped("try:\n"
                       f"    for i in range({files}):\n"
                       f"        open(f'f{{i}}', 'wb').write(b'0' * {size})\n"
                       "except OSError:\n"
                       "    pass\n"
                       "else:\n"
                       "    raise SystemExit('no quota')\n")


def test_no_socket_reaches_this_machine():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not escaped(f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                           "except OSError:\n    pass\nelse:\n    raise SystemExit('connected')\n")


def test_the_run_record_names_the_protections():
    described = isolation(sys.executable).describe()
    assert "network namespace (no network)" in described
    assert any(line.startswith("process limit: ") and not line.endswith("none") for line in described)
