"""`minitron run RECIPE.yaml`: the whole recipe, stage after stage, each resumable and skipped when done.

    minitron run recipes/tiny/llama-3.1-minitron-4b-width.yaml --dry-run    # the plan, with parameter counts
    minitron run recipes/tiny/llama-3.1-minitron-4b-width.yaml              # embedded default, CPU, minutes

Stages: teacher (the embedded default when `teacher.model: embedded`), correct, prune, distill, then the optional
quantize, deploy, bench and eval sections. Each writes its own folder under `work_dir/<recipe name>/` through
the same code as its `minitron` command, and a marker in `.stages/` with a fingerprint of its settings and of
every stage before it. A stage whose folder is complete with the same fingerprint is skipped; one that stopped part-way
resumes (training continues from its last checkpoint); a changed setting reruns that stage and those after it.
This is the composition root: it imports compress, deploy, bench and evals, and none of them imports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger("minitron")

MARKERS = ".stages"
"""Beside the stage folders, so a stage that starts over (and clears its folder) keeps its marker."""


@dataclass
class Stage:
    name: str
    out: Path
    """The stage's folder; its marker lives in `<out.parent>/.stages/<name>.json`."""
    settings: dict
    run: Callable[[bool, bool], None]
    """run(resume, overwrite): does the work, writing `out`."""
    describe: str = ""
    fingerprint: str = field(default="", init=False)


def _fingerprint(settings: dict, upstream: str) -> str:
    return hashlib.sha256(json.dumps([settings, upstream], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _marker(stage: Stage) -> Path:
    return stage.out.parent / MARKERS / f"{stage.name}.json"


def status(stage: Stage) -> str:
    """'done' (skip), 'partial' (resume) or 'todo' (run from scratch)."""
    marker = _marker(stage)
    if not marker.is_file() or not stage.out.exists():
        return "todo"
    recorded = json.loads(marker.read_text())
    if recorded.get("fingerprint") != stage.fingerprint:
        return "todo"
    return "done" if recorded.get("complete") else "partial"


def _mark(stage: Stage, complete: bool) -> None:
    _marker(stage).parent.mkdir(parents=True, exist_ok=True)
    _marker(stage).write_text(json.dumps({"stage": stage.name, "fingerprint": stage.fingerprint,
                                                "settings": stage.settings, "complete": complete}, default=str))


def plan(recipe_path: str | Path, work_dir: str | Path | None = None) -> list[Stage]:
    """The recipe's stages in order, with their folders, settings and fingerprints."""
    from compress import cli as compress_cli
    from compress.recipe import load_recipe
    from compress.train import fit

    recipe = load_recipe(recipe_path)
    root = Path(work_dir or recipe.work_dir) / recipe.name
    # The stages' functions run later: every name they use is bound once here (or passed as a default),
    # never reassigned, so each runs with its own folder and settings.
    data = recipe.data
    if not data:
        raise ValueError(f"{recipe_path}: `data` is required to run a recipe (the distillation data)")
    stages: list[Stage] = []

    if recipe.teacher_model == "embedded":
        from compress import embedded

        folder = root / "embedded"
        steps = int(recipe.embedded.get("steps", 300))
        stages.append(Stage("teacher", folder, {"embedded_steps": steps},
                            lambda resume, overwrite, folder=folder, steps=steps: embedded.build(folder, steps=steps),
                            "build and pretrain the embedded default"))
        teacher = folder / "teacher"
        data = str(folder / data) if not Path(data).exists() else data
    else:
        teacher = Path(recipe.teacher_model)

    if recipe.correct:
        corrected = root / "corrected"
        correct_cfg = _train_config(recipe.correct, kd=False)
        stages.append(Stage("correct", corrected, recipe.correct,
                            lambda resume, overwrite, source=teacher: fit(
                                str(source), data, corrected, correct_cfg, stage="correct", resume=resume,
                                overwrite=overwrite),
                            f"teacher correction, {correct_cfg.steps} steps"))
        teacher = corrected

    pruned = root / "pruned"
    p = recipe.prune
    calib = {k: recipe.importance.get(k) for k in ("num_samples", "seq_len", "batch_size")}
    calib = {k: v for k, v in calib.items() if v is not None}
    if p.method == "width":
        run_prune = lambda resume, overwrite, t=teacher: compress_cli.prune_width(  # noqa: E731
            model=str(t), out=pruned, calib=data, hidden_size=p.hidden_size, ffn_hidden_size=p.ffn_hidden_size,
            num_heads=p.num_heads, num_kv_heads=p.num_kv_heads, overwrite=True, **calib)
    else:
        run_prune = lambda resume, overwrite, t=teacher: compress_cli.prune_depth(  # noqa: E731
            model=str(t), out=pruned, calib=data, num_layers=p.num_layers, overwrite=True,
            metric=recipe.importance.get("metric", "lm-loss"), **calib)
    stages.append(Stage("prune", pruned, {**p.__dict__, **calib}, run_prune,
                        f"{p.method} pruning, {_param_change(recipe)}"))

    distilled = root / "distilled"
    distill_cfg = _train_config(recipe.distill, kd=True)
    stages.append(Stage("distill", distilled, recipe.distill,
                        lambda resume, overwrite, t=teacher: fit(str(pruned), data, distilled, distill_cfg,
                                                                 teacher_dir=str(t), resume=resume,
                                                                 overwrite=overwrite),
                        f"distillation, {distill_cfg.steps} steps"))
    students = {"teacher": teacher, "student": distilled}

    if recipe.quantize:
        from deploy.quantize import quantize

        fp8 = root / "fp8"
        q = dict(recipe.quantize)
        stages.append(Stage("quantize", fp8, q, lambda resume, overwrite: quantize(
            str(distilled), data, fp8, overwrite=True, **q), "FP8 with ModelOpt"))
        if recipe.deploy:
            from deploy.deploy import deploy

            d = {"backend": "trtllm", "dry_run": True, **recipe.deploy}
            deployed = root / f"deploy-{d['backend']}"
            stages.append(Stage("deploy", deployed, d,
                                lambda resume, overwrite: deploy(fp8, out=deployed, overwrite=True, **d),
                                f"{d['backend']} deployment folder" + (" (dry run)" if d["dry_run"] else "")))

    if recipe.bench:
        b = {"backend": "hf", **recipe.bench}
        stages.append(Stage("bench", root / "bench", b, lambda resume, overwrite: _bench(students, root / "bench", b),
                            "throughput sweep, teacher vs student"))

    if recipe.eval:
        e = {"suite": "fixtures", **recipe.eval}
        stages.append(Stage("eval", root / "evals", e, lambda resume, overwrite: _evals(students, root / "evals", e),
                            f"eval suite {e['suite']}, teacher and student, and the table"))

    upstream = ""
    for stage in stages:
        stage.fingerprint = upstream = _fingerprint(stage.settings, upstream)
    return stages


def _param_change(recipe) -> str:
    """Teacher and target parameter counts, from the teacher's config alone (meta device)."""
    from transformers import AutoConfig

    from compress.arch import Dims, WidthTarget, count_params, derive_config

    source = AutoConfig.from_pretrained(recipe.teacher_config)
    p = recipe.prune
    dims = WidthTarget(p.hidden_size, p.ffn_hidden_size, p.num_heads, p.num_kv_heads).resolve(Dims.of(source))
    keep = list(range(p.num_layers)) if p.num_layers else None
    before, after = count_params(source)["params"], count_params(derive_config(source, dims, keep))["params"]
    scale = 1e9 if before >= 1e9 else 1e6
    unit = "B" if scale == 1e9 else "M"
    return f"{before / scale:.3f}{unit} -> {after / scale:.3f}{unit} params"


def _train_config(section: dict, kd: bool):
    from compress.train import TrainConfig, steps_for_tokens

    section = dict(section)
    tokens = section.pop("tokens", None)
    cfg = TrainConfig(**{"kd": kd, **section})
    if tokens is not None:
        cfg.steps = steps_for_tokens(tokens, cfg.global_batch, cfg.seq_len)
    return cfg


def _bench(models: dict, out: Path, settings: dict) -> None:
    import shutil

    from bench.cli import plot, sweep

    shutil.rmtree(out, ignore_errors=True)  # the models changed, so earlier records would be stale
    sweep(backend=settings["backend"], model=[str(m) for m in models.values()], label=list(models), out=out,
          isl_osl=settings.get("isl_osl", "64/32"), batch_size=settings.get("batch_size", 8),
          num_requests=settings.get("num_requests", 16), repeats=settings.get("repeats", 3))
    plot(results=[out], out=out / "report", baseline="teacher")


def _evals(models: dict, out: Path, settings: dict) -> None:
    from evals.backends import hf_lm
    from evals.run import check_data, evaluate_suite, write_run
    from evals.suites import load_suite
    from evals.table import write_table

    suite = load_suite(settings["suite"])
    check_data(suite, settings.get("data_dir"))
    runs = []
    for label, model in models.items():
        results = evaluate_suite(hf_lm(str(model)), suite, limit=settings.get("limit"))
        runs.append(write_run(out / label, results, suite, str(model), "hf", overwrite=True, label=label))
    write_table(runs, out / "table")


def run(recipe_path: str | Path, work_dir: str | Path | None = None, dry_run: bool = False) -> list[tuple[str, str]]:
    """Run (or, with dry_run, only show) every stage; returns (stage, what happened) pairs."""
    stages = plan(recipe_path, work_dir)
    actions = []
    for stage in stages:
        state = status(stage)
        action = {"done": "skip (complete, settings unchanged)", "partial": "resume", "todo": "run"}[state]
        actions.append((stage.name, action))
        log.info("%-9s %-38s %s  -> %s", stage.name, action, stage.describe, stage.out)
        if dry_run or state == "done":
            continue
        _mark(stage, complete=False)
        stage.run(state == "partial", True)
        _mark(stage, complete=True)
    return actions
