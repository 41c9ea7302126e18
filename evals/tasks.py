"""Our own lm-eval task configs, made ready for lm-eval's TaskManager.

Task YAMLs live in `evals/tasks/` (with their Python helpers beside them, which lm-eval's `!function`
resolves relative to the YAML). Two placeholders are filled in when the folder is rendered, because lm-eval
needs absolute paths and they differ per machine:
- `@LM_EVAL_TASKS@`: lm-eval's own `tasks/` folder, so a fixture task can `include:` the real task's YAML
  and keep its prompts, choices and metrics exactly;
- `@FIXTURES@`: `evals/fixtures/`, the small datasets the project ships in the real tasks' formats.

    manager = task_manager(include_defaults=False)   # only ours: indexes in well under a second
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


def render_tasks(dest: Path) -> Path:
    """Copy `evals/tasks/` to `dest` with the placeholders replaced by absolute paths."""
    import lm_eval.tasks

    lm_eval_tasks = Path(lm_eval.tasks.__file__).resolve().parent
    for src in TASKS_DIR.rglob("*"):
        if src.is_dir() or "__pycache__" in src.parts:
            continue
        target = dest / src.relative_to(TASKS_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix in (".yaml", ".yml"):
            text = src.read_text().replace("@LM_EVAL_TASKS@", str(lm_eval_tasks))
            target.write_text(text.replace("@FIXTURES@", str(FIXTURES_DIR)))
        else:
            shutil.copy2(src, target)
    return dest


@lru_cache(maxsize=None)
def rendered_tasks_dir() -> Path:
    """One rendered copy per process, removed at exit."""
    dest = Path(tempfile.mkdtemp(prefix="minitron-tasks-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    return render_tasks(dest)


@lru_cache(maxsize=None)
def task_manager(include_defaults: bool = False):
    """lm-eval's TaskManager over our tasks; `include_defaults` adds lm-eval's ~15k built-in tasks, whose
    indexing takes 15-30 s, so only suites that name built-in tasks ask for it."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(rendered_tasks_dir())], include_defaults=include_defaults)
