"""The house's shape: imports run one way (core <- compress <- deploy; core <- bench, evals; the runner and the CLI
in minitron/ on top), and the distribution installs one top-level name."""

import ast
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as pip vendors it
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"core": "core", "compress": "compress", "deploy": "deploy", "bench": "bench", "evals": "evals",
            "minitron": "minitron"}
ALLOWED = {
    "core": set(),
    "compress": {"core"},
    "deploy": {"core", "compress"},
    "bench": {"core"},
    "evals": {"core"},
    "minitron": {"core", "compress", "deploy", "bench", "evals"},
}


def _imported_packages(path: Path) -> set[str]:
    """The stage packages a module imports (`minitron.compress...` -> compress, `minitron.pipeline` -> minitron)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "minitron":
                found.add(parts[1] if len(parts) > 1 and parts[1] in PACKAGES and parts[1] != "minitron"
                          else "minitron")
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_run_one_way(package):
    wrong = {}
    for path in sorted((ROOT / PACKAGES[package]).rglob("*.py")):
        bad = _imported_packages(path) - ALLOWED[package] - {package}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"


def test_the_distribution_installs_one_top_level_name():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {name.split(".")[0] for name in setuptools["packages"]} == {"minitron"}
    assert "py-modules" not in setuptools
    mapped = setuptools["package-dir"]
    for package, folder in PACKAGES.items():  # every folder is installed, each under the one name
        name = "minitron" if package == "minitron" else f"minitron.{package}"
        assert mapped[name] == folder and name in setuptools["packages"]


def test_library_calls_do_not_need_the_cli():
    import subprocess
    import sys

    code = ("import sys; import minitron.pipeline, minitron.compress.prune, minitron.compress.train, "
            "minitron.deploy.quantize, minitron.evals.run, minitron.bench.sweep, minitron.findings; "
            "assert not [m for m in sys.modules if m.startswith('minitron.cli') or m == 'typer'], 'CLI imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
