"""`minitron run RECIPE.yaml`: the whole recipe, stage after stage, each resumable and skipped when done.

    minitron run recipes/tiny/llama-3.1-minitron-4b-width.yaml --dry-run    # the plan, with parameter counts
    minitron run recipes/tiny/llama-3.1-minitron-4b-width.yaml              # embedded default, CPU, minutes

Stages: teacher (the embedded default when `teacher.model: embedded`), correct, prune, distill, then the optional
quantize, deploy, bench and eval sections, and the findings' arms (minitron/planner.py plans them, as data:
a library function and its arguments each). Each writes its own folder under `work_dir/<recipe name>/` through
the same code as its `minitron` command, and a marker in `.stages/` with a fingerprint of its settings and of
every stage before it. A stage whose folder is complete with the same fingerprint is skipped; one that stopped part-way
resumes (training continues from its last checkpoint); a changed setting reruns that stage and those after it.
This is the composition root: it imports compress, deploy, bench and evals, and none of them imports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from minitron.core.errors import BadInput
from minitron.core.precision import resolve_device
from minitron.core.records import atomic_write
from minitron.planner import Planner, Stage
from minitron.recipe_sections import ClusterSection

log = logging.getLogger("minitron")

MARKERS = ".stages"
"""Beside the stage folders, so a stage that starts over (and clears its folder) keeps its marker."""


def _fingerprint(settings: dict, upstream: list[str]) -> str:
    return hashlib.sha256(json.dumps([settings, upstream], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_identity(source: str) -> object:
    """A recipe's `data` or `teacher.model` as a fingerprint sees it: a local path by its files' names, sizes and
    modification times (so an edited file or a swapped checkpoint reruns what read it, without hashing gigabytes),
    anything else (a hub id, `stdlib`, `embedded`) by its name."""
    path = Path(source).expanduser()
    if not path.exists():
        return source
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file() and not any(
        part.startswith(".") for part in f.relative_to(path).parts))
    return [source] + [(str(f.relative_to(path)) if f != path else f.name, f.stat().st_size, f.stat().st_mtime_ns)
                       for f in files]


def _marker(stage: Stage) -> Path:
    return stage.markers / f"{stage.name}.json"


def status(stage: Stage) -> str:
    """'done' (skip), 'partial' (resume) or 'todo' (run from scratch)."""
    marker = _marker(stage)
    if not marker.is_file() or not stage.out.exists():
        return "todo"
    recorded = json.loads(marker.read_text())
    if recorded.get("fingerprint") != stage.fingerprint:
        return "todo"
    if recorded.get("complete") and not (stage.out / stage.completes).is_file():
        log.warning("%s is marked done but %s lacks %s (killed while writing, or edited since): running it again",
                    stage.name, stage.out, stage.completes)
        return "partial"
    return "done" if recorded.get("complete") else "partial"


def _mark(stage: Stage, complete: bool) -> None:
    atomic_write(_marker(stage), json.dumps({"stage": stage.name, "fingerprint": stage.fingerprint,
                                             "settings": stage.settings, "complete": complete}, default=str))


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _time_summary(took: dict[str, float]) -> str:
    """One line for the end of a run: the total, then the stages that took longest (where the time went on this
    machine, e.g. the eval on a CPU without AMX)."""
    slowest = sorted(took.items(), key=lambda item: -item[1])[:4]
    return (f"{len(took)} stage(s) in {_duration(sum(took.values()))}; longest: "
            + ", ".join(f"{name} {_duration(seconds)}" for name, seconds in slowest))


def plan(recipe_path: str | Path, work_dir: str | Path | None = None, findings_out: Path | None = None
         ) -> list[Stage]:
    """The recipe's stages in order, with their folders, settings, dependencies and fingerprints; the findings go
    to `findings_out` instead of the recipe's folder when given."""
    from minitron.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    if not recipe.data:
        raise BadInput(f"{recipe_path}: `data` is required to run a recipe (the distillation data)")
    planner = Planner(recipe, Path(work_dir or recipe.work_dir) / recipe.name, recipe_path)
    stages = planner.stages(findings_out)
    # Every stage reads the data or the teacher, directly or through the stages before it. Those a stage makes
    # (the stdlib corpus, the embedded or converted teacher) are in its settings already; the others are not.
    sources = {name: _source_identity(given) for name, given, used in (
        ("data", recipe.data, planner.data), ("teacher", recipe.teacher_model, planner.original))
        if not Path(used).is_relative_to(planner.root)}
    fingerprints: dict[str, str] = {}
    for stage in stages:
        stage.markers = planner.root / MARKERS
        stage.fingerprint = fingerprints[stage.name] = _fingerprint(
            stage.settings, [fingerprints[n] for n in stage.needs] + ([sources] if sources else []))
    return stages


def memory_plans(stages: list[Stage], recipe, gpus: int, gpu_memory_gb: float) -> None:
    """Log every training stage's memory per GPU and length on `gpus` GPUs of `gpu_memory_gb` (compress/
    memory_plan.py, from the teacher's config alone); then refuse the stages that do not fit, naming the fix."""
    from transformers import AutoConfig

    from minitron.compress.memory_plan import GB, check_fits, plan_training
    from minitron.core.arch import pruned_config

    teacher, gpu_bytes = AutoConfig.from_pretrained(recipe.teacher_config), gpu_memory_gb * GB
    training = [stage for stage in stages if stage.trains]
    if not training:
        return
    log.info("memory per GPU on %d GPU(s) of %g GB, FSDP2 (compress/memory_plan.py):", gpus, gpu_memory_gb)
    width, refused = max(len(stage.name) for stage in training), []
    for stage in training:
        if stage.student is None:
            log.info("  %-*s its student's size is chosen by an earlier stage: planned when it runs", width, stage.name)
            continue
        cfg = stage.arguments["cfg"]
        student = pruned_config(teacher, stage.student.width_target(), stage.student.num_layers)
        source = teacher if stage.arguments.get("teacher_dir") else None
        plan = plan_training(student, source, cfg, gpus, "cuda")
        log.info("  %-*s %s", width, stage.name, plan.describe(gpu_bytes))
        section = "correct" if stage.name == "correct" else "distill"
        try:
            check_fits(plan, student, source, cfg, gpu_bytes, f"stage {stage.name} (recipe section `{section}`)")
        except BadInput as err:
            refused.append(str(err))
    if refused:
        raise BadInput("\n".join(refused))


def run(recipe_path: str | Path, work_dir: str | Path | None = None, dry_run: bool = False,
        rerun: list[str] | None = None, verify: bool = False, gpus: int | None = None,
        gpu_memory_gb: float | None = None) -> list[tuple[str, str]]:
    """Run (or, with dry_run, only show) every stage; returns (stage, what happened) pairs. Stages named in
    `rerun` start over, and so does every stage that reads their output: fingerprints cover settings, not code or
    data, so this is how a code change reaches the results. With `verify`, the whole recipe runs from nothing
    under `<work_dir>/verify/` (the recipe's work_dir by default), its findings are compared with the committed
    ones, and VerificationFailed is raised when a verdict or a headline number changed (minitron/verify.py).

    Under torchrun (`torchrun --nproc_per_node 8 -m minitron run RECIPE`) every process plans the same stages;
    training stages run on all of them (FSDP2, data-parallel), every other stage on rank 0 while the others
    wait, so `work_dir` must be a filesystem all nodes share.

    A dry run also plans each training stage's memory per GPU on `gpus` GPUs of `gpu_memory_gb` (by default the
    recipe's `cluster` section; none when it has none) and fails when one does not fit.
    """
    import torch.distributed as dist

    from minitron.compress.distributed import init_distributed
    from minitron.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    given = {k: v for k, v in (("gpus", gpus), ("gpu_memory_gb", gpu_memory_gb)) if v is not None}
    if given and not dry_run:
        raise BadInput("--gpus and --gpu-memory plan memory in a dry run: add --dry-run (a real run's GPUs are the "
                       "processes torchrun starts)")
    if given.get("gpus", 1) < 1 or given.get("gpu_memory_gb", 1) <= 0:
        raise BadInput(f"--gpus must be at least 1 and --gpu-memory positive, got {gpus} and {gpu_memory_gb}")
    cluster = {**recipe.cluster, **given}
    scratch = None
    if verify:
        if not recipe.findings:
            raise BadInput(f"--verify compares a rerun's findings with the committed ones, and {recipe_path} has "
                             "no `findings` section")
        if rerun:
            raise BadInput("--verify reruns every stage from nothing: drop --rerun")
        work_dir = Path(work_dir or recipe.work_dir) / "verify"
        scratch = work_dir / recipe.name
        if not dry_run:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)  # a rerun from nothing, not a resume of the last one
    stages = plan(recipe_path, work_dir, findings_out=scratch / "findings" if scratch else None)
    states = [status(stage) for stage in stages]  # decided before any process marks a stage as started
    unknown = set(rerun or ()) - {stage.name for stage in stages}
    if unknown:
        raise BadInput(f"--rerun {', '.join(sorted(unknown))}: no such stage in {recipe_path}; its stages are "
                         f"{', '.join(stage.name for stage in stages)}")
    forced = set(rerun or ())
    for i, stage in enumerate(stages):  # stages come after the stages they read
        if stage.name in forced or forced & set(stage.needs):
            forced.add(stage.name)
            states[i] = "todo"
    rank, world = 0, 1
    if not dry_run:
        # rank 0 may prune, quantize or evaluate for hours while the other processes wait at a barrier
        rank, world, _ = init_distributed(resolve_device(recipe.device), timeout_hours=24)
    width = max(len(stage.name) for stage in stages)
    actions = []
    took = {}
    for stage, state in zip(stages, states):
        action = {"done": "skip (complete, settings unchanged)", "partial": "resume", "todo": "run"}[state]
        actions.append((stage.name, action))
        if rank == 0:
            log.info("%-*s %-36s %s  -> %s", width, stage.name, action, stage.describe, stage.out)
        if dry_run or state == "done":
            continue
        if rank == 0:
            _mark(stage, complete=False)
        if world > 1:
            dist.barrier()  # the marker exists before anyone starts
        started = time.perf_counter()
        if stage.trains or rank == 0:
            stage.run(resume=state == "partial")
        if world > 1:
            dist.barrier()
        took[stage.name] = time.perf_counter() - started
        if rank == 0:
            _mark(stage, complete=True)
            log.info("%s done in %s", stage.name, _duration(took[stage.name]))
    if took and rank == 0:
        log.info("%s", _time_summary(took))
    if dry_run and cluster:
        machines = ClusterSection(**cluster)  # its defaults fill what neither the recipe nor a flag gave
        memory_plans(stages, recipe, machines.gpus, machines.gpu_memory_gb)
    if scratch and not dry_run and rank == 0:
        from minitron.verify import verify as compare_findings

        compare_findings(Path(recipe.findings["out"]), scratch / "findings",
                         recipe.findings.get("tolerance", 0.05), scratch / "verify.md")
    return actions
