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

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from minitron import stages as stage_work
from minitron.core.errors import BadInput
from minitron.core.precision import resolve_device
from minitron.core.records import atomic_write

log = logging.getLogger("minitron")

MARKERS = ".stages"
"""Beside the stage folders, so a stage that starts over (and clears its folder) keeps its marker."""


@dataclass
class Stage:
    name: str
    out: Path
    settings: dict
    run: Callable[[bool, bool], None]
    """run(resume, overwrite): does the work, writing `out`."""
    describe: str = ""
    distributed: bool = False
    """Runs on every process under torchrun (training); other stages run on rank 0 while the rest wait."""
    needs: tuple[str, ...] = ()
    """The stages whose outputs this one reads: their fingerprints are part of its own."""
    markers: Path = Path(MARKERS)
    """The folder of the stage's marker (set by `plan`: `<work_dir>/<recipe name>/.stages/`)."""
    fingerprint: str = field(default="", init=False)


def _fingerprint(settings: dict, upstream: list[str]) -> str:
    return hashlib.sha256(json.dumps([settings, upstream], sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    return "done" if recorded.get("complete") else "partial"


def _mark(stage: Stage, complete: bool) -> None:
    atomic_write(_marker(stage), json.dumps({"stage": stage.name, "fingerprint": stage.fingerprint,
                                             "settings": stage.settings, "complete": complete}, default=str))


def plan(recipe_path: str | Path, work_dir: str | Path | None = None, findings_out: Path | None = None
         ) -> list[Stage]:
    """The recipe's stages in order, with their folders, settings, dependencies and fingerprints; the findings go
    to `findings_out` instead of the recipe's folder when given."""
    from minitron.compress import prune as pruning
    from minitron.compress.train import fit
    from minitron.core.arch import WidthTarget
    from minitron.core.gguf import convert as convert_gguf
    from minitron.core.gguf import is_gguf
    from minitron.recipe import PruneSpec, load_recipe

    recipe = load_recipe(recipe_path)
    root = Path(work_dir or recipe.work_dir) / recipe.name
    device = resolve_device(recipe.device)
    precision = recipe.precision
    # The stages' functions run later: every name they use is bound once here (or passed as a default),
    # never reassigned, so each runs with its own folder and settings.
    data = recipe.data
    if not data:
        raise BadInput(f"{recipe_path}: `data` is required to run a recipe (the distillation data)")
    stages: list[Stage] = []
    teacher_stage: tuple[str, ...] = ()
    """The stages every later one reads: the original teacher (when a stage makes it) and the data."""

    if data == "stdlib":
        import platform

        from minitron.core.stdlib_corpus import write_stdlib_corpus

        corpus = root / "data"
        stages.append(Stage("data", corpus, {"corpus": "stdlib", "python": platform.python_version()},
                            lambda resume, overwrite: write_stdlib_corpus(corpus, overwrite=True),
                            "the standard library's text, split by document"))
        teacher_stage, data = ("data",), str(corpus)

    if recipe.teacher_model == "embedded":
        from minitron.compress import embedded

        folder = root / "embedded"
        steps = int(recipe.embedded.get("steps", 300))
        stages.append(Stage("teacher", folder, {"embedded_steps": steps, "precision": precision},
                            lambda resume, overwrite, folder=folder, steps=steps: embedded.build(
                                folder, steps=steps, precision=precision),
                            "build and pretrain the embedded default"))
        teacher_stage += ("teacher",)
        original = folder / "teacher"
        data = str(folder / data) if not Path(data).exists() else data
    elif recipe.teacher_wheel or is_gguf(recipe.teacher_model):
        original = root / "teacher"
        source = {"model": recipe.teacher_model, "wheel": recipe.teacher_wheel}
        stages.append(Stage("teacher", original, source,
                            lambda resume, overwrite: convert_gguf(stage_work.gguf_file(recipe), original, overwrite=True),
                            f"the teacher from {recipe.teacher_wheel or recipe.teacher_model}, as a HF checkpoint"))
        teacher_stage += ("teacher",)
    else:
        original = Path(recipe.teacher_model)
    teacher, teacher_needs = original, teacher_stage

    if recipe.correct:
        corrected = root / "corrected"
        correct_cfg = stage_work.train_config(recipe.correct, kd=False, precision=precision)
        stages.append(Stage("correct", corrected, recipe.correct,
                            lambda resume, overwrite: fit(str(original), data, corrected, correct_cfg, stage="correct",
                                                          resume=resume, overwrite=overwrite, device=device),
                            f"teacher correction, {correct_cfg.steps} steps", True, teacher_stage))
        teacher, teacher_needs = corrected, ("correct",) + teacher_stage

    p = recipe.prune
    calib = {k: recipe.importance[k] for k in ("num_samples", "seq_len", "batch_size") if k in recipe.importance}

    def width_prune(name: str, folder: str, source: Path, needs: tuple[str, ...], ranking: str = "activation",
                    seed: int = 0) -> Stage:
        out = root / folder
        return Stage(name, out, {**p.target(), **calib, "ranking": ranking, "precision": precision,
                                 **({"seed": seed} if seed else {})},
                     lambda resume, overwrite: pruning.prune_width(
                         str(source), out, WidthTarget(p.hidden_size, p.ffn_hidden_size, p.num_heads,
                                                       p.num_kv_heads),
                         calib=data, ranking=ranking, overwrite=True, device=device, precision=precision, seed=seed,
                         **calib),
                     f"width pruning by {ranking} ranking, {stage_work.param_change(recipe, p)}", needs=needs)

    def scan_settings(section: dict) -> dict:
        """The depth scan's flags from `section` (importance, or findings.depth_scan over importance)."""
        scan = {"metric": section.get("metric", "lm-loss"), "scan_lengths": section.get("scan_lengths"),
                # every candidate block is scored on these blocks: the scan's cost, apart from importance's
                "num_samples": section.get("scan_samples", calib.get("num_samples", 1024))}
        return {**calib, **scan}

    def depth_prune(name: str, folder: str, num_layers: int) -> Stage:
        out = root / folder
        scored = scan_settings(recipe.importance)
        return Stage(name, out, {"method": "depth", "num_layers": num_layers, **scored, "precision": precision},
                     lambda resume, overwrite: pruning.prune_depth(
                         str(teacher), out, calib=data, num_layers=num_layers, overwrite=True, device=device,
                         precision=precision, **stage_work.scan_arguments(scored)),
                     f"depth pruning, {stage_work.param_change(recipe, PruneSpec('depth', num_layers=num_layers))}",
                     needs=teacher_needs)

    distill_cfg = stage_work.train_config(recipe.distill, kd=True, precision=precision)

    def distill(name: str, folder: str, student: Path, needs: tuple[str, ...], source: Path | None = None,
                describe: str = "", random_init: bool = False, **changes) -> Stage:
        """A distillation run from `source` (the teacher by default), with `changes` to its TrainConfig."""
        out, cfg = root / folder, dataclasses.replace(distill_cfg, **changes)
        source = source or teacher
        return Stage(name, out, {**recipe.distill, **changes, "random_init": random_init, "precision": cfg.precision},
                     lambda resume, overwrite: fit(str(student), data, out, cfg, teacher_dir=str(source),
                                                   resume=resume, overwrite=overwrite, random_init=random_init,
                                                   device=device, teacher_cache=root / "teacher-outputs"),
                     f"{describe or 'distillation'}, {cfg.steps} steps"
                     + (f", seed {cfg.seed}" if "seed" in changes else ""), True, needs)

    if p.method == "width":
        stages.append(width_prune("prune", "pruned", teacher, teacher_needs))
    else:
        stages.append(depth_prune("prune", "pruned", p.num_layers))
    stages.append(distill("distill", "distilled", root / "pruned", ("prune",) + teacher_needs))
    distilled = root / "distilled"
    students = {p.method: distilled}
    if p.depth_layers:
        stages += [
            depth_prune("prune-depth", "pruned-depth", p.depth_layers),
            distill("distill-depth", "distilled-depth", root / "pruned-depth", ("prune-depth",) + teacher_needs,
                    describe="the depth-pruned student"),
        ]
        students["depth"] = root / "distilled-depth"

    findings = recipe.findings
    if findings.get("depth_scan"):  # Figures 8 and 9 by more lengths and a task than the pruning's own scan
        scanned, scored = root / "depth-scan", scan_settings({**recipe.importance, **findings["depth_scan"]})
        stages.append(Stage("scan-depth", scanned, {**scored, "num_layers": p.depth_layers, "precision": precision},
                            lambda resume, overwrite: pruning.scan_depth(
                                str(teacher), scanned, p.depth_layers, calib=data, overwrite=True, device=device,
                                precision=precision, **stage_work.scan_arguments(scored)),
                            f"depth-sensitivity scan by LM loss and {scored['metric']}", needs=teacher_needs))
    # every student a verdict compares trains once per seed, and random pruning draws once per seed; the first
    # seed's stages are the recipe's own (`distill`, ...), the others add `-seed<N>` to name and folder
    first_seed = distill_cfg.seed
    seeds = range(first_seed, first_seed + int(findings.get("seeds", 1))) if findings else ()

    def seeded(name: str, seed: int) -> str:
        return name if seed == first_seed else f"{name}-seed{seed}"

    def at(seed: int) -> dict:
        """The TrainConfig change of a run under `seed`: none for the recipe's own seed."""
        return {} if seed == first_seed else {"seed": seed}

    for seed in seeds[1:]:
        stages += [
            distill(seeded("distill", seed), seeded("distilled", seed), root / "pruned",
                    ("prune",) + teacher_needs, describe="the width-pruned student", **at(seed)),
            distill(seeded("distill-depth", seed), seeded("distilled-depth", seed), root / "pruned-depth",
                    ("prune-depth",) + teacher_needs, describe="the depth-pruned student", **at(seed)),
        ]
    for seed in seeds:  # seconds each, and they tell importance from its baselines before any training
        stages.append(width_prune(seeded("prune-random", seed), seeded("pruned-random", seed), teacher,
                                  teacher_needs, ranking="random", seed=seed))
    if findings:
        stages.append(width_prune("prune-magnitude", "pruned-magnitude", teacher, teacher_needs, ranking="magnitude"))
    if findings and findings.get("baselines", True):
        if not recipe.correct:
            raise BadInput(f"{recipe_path}: the findings' baselines include distilling from the uncorrected "
                             "teacher: add a `correct` section, or set findings.baselines: false")
        pruned = root / "pruned"
        needs = ("prune",) + teacher_needs
        original_needs = ("prune-original",) + teacher_stage
        stages.append(width_prune("prune-original", "pruned-from-original", original, teacher_stage))
        for seed in seeds:
            random_pruned = seeded("prune-random", seed)
            stages += [
                distill(seeded("distill-original", seed), seeded("distilled-from-original", seed),
                        root / "pruned-from-original", original_needs, source=original,
                        describe="Figure 4: distillation from the uncorrected teacher", **at(seed)),
                distill(seeded("distill-parallel", seed), seeded("distilled-parallel-correction", seed),
                        root / "pruned-from-original", original_needs, source=original,
                        describe="Figure 5: the teacher corrected while it teaches", **at(seed),
                        correct_teacher=True, teacher_lr=correct_cfg.lr, teacher_warmup=correct_cfg.warmup),
                distill(seeded("distill-random-init", seed), seeded("distilled-random-init", seed), pruned, needs,
                        describe="Figure 6: random init + KD", random_init=True, **at(seed)),
                distill(seeded("distill-random-pruning", seed), seeded("distilled-random-pruning", seed),
                        root / seeded("pruned-random", seed), (random_pruned,) + teacher_needs,
                        describe="Figure 6: random pruning + KD", **at(seed)),
                distill(seeded("train-lm-loss", seed), seeded("trained-lm-loss", seed), pruned, needs,
                        describe="Figure 6: pruning + LM loss", kd=False, **at(seed)),
            ]
    student_needs = tuple(s.name for s in stages if s.name in ("distill", "distill-depth"))

    if recipe.quantize:
        from minitron.deploy.quantize import quantize

        fp8 = root / "fp8"
        q = dict(recipe.quantize)
        stages.append(Stage("quantize", fp8, q, lambda resume, overwrite: quantize(
            str(distilled), data, fp8, overwrite=True, device=device, **q), "FP8 with ModelOpt", needs=("distill",)))
        if recipe.deploy:
            from minitron.deploy.deploy import deploy

            d = {"backend": "trtllm", "dry_run": True, **recipe.deploy}
            deployed = root / f"deploy-{d['backend']}"
            stages.append(Stage("deploy", deployed, d,
                                lambda resume, overwrite: deploy(fp8, out=deployed, overwrite=True, **d),
                                f"{d['backend']} deployment folder" + (" (dry run)" if d["dry_run"] else ""),
                                needs=("quantize",)))

    if recipe.bench:
        b = {"backend": "hf", **recipe.bench}
        swept = {"teacher": teacher, **students}
        stages.append(Stage("bench", root / "bench", b,
                            lambda resume, overwrite: stage_work.bench(swept, root / "bench", b, device),
                            f"throughput sweep: {', '.join(swept)}", needs=teacher_needs + student_needs))

    if recipe.eval:
        e = {"suite": "fixtures", **recipe.eval}
        evaluated = {"teacher": original, **({"corrected": teacher} if recipe.correct else {}), **students}
        fp8_of = list(students) if e.get("fp8") else []
        if fp8_of and not recipe.quantize:
            raise BadInput(f"{recipe_path}: eval.fp8 evaluates FP8 students with the `quantize` settings: add them")
        stages.append(Stage("eval", root / "evals", {**e, "quantize": recipe.quantize},
                            lambda resume, overwrite: stage_work.evals(evaluated, fp8_of, data, root / "evals", e,
                                                             recipe.quantize, device),
                            f"eval suite {e['suite']}: {', '.join(evaluated)}"
                            + (f", FP8 {', '.join(fp8_of)}" if fp8_of else "") + "; the table",
                            needs=tuple(dict.fromkeys(teacher_stage + teacher_needs + student_needs))))
        if len(seeds) > 1 and p.depth_layers:  # Table 1's width-vs-depth verdict over seeds, not one draw
            retrained = {f"{label}-seed{seed}": root / seeded(folder, seed) for seed in seeds[1:]
                         for label, folder in (("width", "distilled"), ("depth", "distilled-depth"))}
            stages.append(Stage("eval-seeds", root / "evals-seeds", e,
                                lambda resume, overwrite: stage_work.evals(retrained, [], data, root / "evals-seeds", e, {},
                                                                 device),
                                f"eval suite {e['suite']}: the students of seeds {', '.join(map(str, seeds[1:]))}",
                                needs=tuple(seeded(name, seed) for seed in seeds[1:]
                                            for name in ("distill", "distill-depth"))))

    if findings:
        from minitron import findings_report as report
        from minitron.findings_runs import HeldOutLosses

        out = findings_out or Path(findings["out"])
        folders = {s.name: s.out for s in stages}
        held_out = HeldOutLosses(data, distill_cfg.seq_len, distill_cfg.seed, distill_cfg.micro_batch,
                                        distill_cfg.eval_batches, device, distill_cfg.precision)
        samples_of = {"teacher": original, **({"corrected": teacher} if recipe.correct else {}), **students}
        stages.append(Stage("findings", out, findings,
                            lambda resume, overwrite: report.write_findings(folders, out, recipe, held_out, samples_of,
                                                                            device),
                            "the paper's findings at this scale: tables, plots, samples, verdicts",
                            needs=tuple(folders)))

    for stage in stages:
        stage.markers = root / MARKERS
    fingerprints: dict[str, str] = {}
    for stage in stages:
        stage.fingerprint = fingerprints[stage.name] = _fingerprint(stage.settings,
                                                                    [fingerprints[n] for n in stage.needs])
    return stages


def run(recipe_path: str | Path, work_dir: str | Path | None = None, dry_run: bool = False,
        rerun: list[str] | None = None, verify: bool = False) -> list[tuple[str, str]]:
    """Run (or, with dry_run, only show) every stage; returns (stage, what happened) pairs. Stages named in
    `rerun` start over, and so does every stage that reads their output: fingerprints cover settings, not code or
    data, so this is how a code change reaches the results. With `verify`, the whole recipe runs from nothing
    under `<work_dir>/verify/` (the recipe's work_dir by default), its findings are compared with the committed
    ones, and VerificationFailed is raised when a verdict or a headline number changed (minitron/verify.py).

    Under torchrun (`torchrun --nproc_per_node 8 -m minitron run RECIPE`) every process plans the same stages;
    training stages run on all of them (FSDP2, data-parallel), every other stage on rank 0 while the others
    wait, so `work_dir` must be a filesystem all nodes share.
    """
    import torch.distributed as dist

    from minitron.compress.distributed import init_distributed
    from minitron.recipe import load_recipe

    recipe = load_recipe(recipe_path)
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
        if stage.distributed or rank == 0:
            stage.run(state == "partial", True)
        if world > 1:
            dist.barrier()
        if rank == 0:
            _mark(stage, complete=True)
    if scratch and not dry_run and rank == 0:
        from minitron.verify import verify as compare_findings

        compare_findings(Path(recipe.findings["out"]), scratch / "findings",
                         recipe.findings.get("tolerance", 0.05), scratch / "verify.md")
    return actions
