"""Recipes: YAML files that name a teacher, its data, and every setting of the path from it to a student.
Each file's header gives the commands it stands for.

    minitron arch --recipe recipes/llama-3.1-minitron-4b-width.yaml

Sections: `teacher` (model and architecture config), `data` (the distillation data), `correct` and
`distill` (training settings: any `TrainConfig` field, plus `tokens` as the budget), `prune` (the target).
Unknown fields are errors that name the field and the ones allowed, so a typo never silently falls back
to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class PruneSpec:
    """The pruning target; a field left out keeps the teacher's size."""

    method: str = "width"
    """'width' (hidden/ffn/heads) or 'depth' (layers)."""
    hidden_size: int | None = None
    ffn_hidden_size: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    num_layers: int | None = None
    """Layers kept by a depth prune."""


@dataclass
class Recipe:
    name: str
    teacher_model: str
    """A local checkpoint folder or a hub id (needs network)."""
    teacher_config: Path
    """A config.json with the teacher's architecture, for dry runs without weights; relative to the recipe."""
    data: str | None = None
    """The distillation data (file, folder, JSONL, Parquet or hub dataset)."""
    correct: dict = field(default_factory=dict)
    """Teacher-correction settings (TrainConfig fields and `tokens`); empty skips correction."""
    prune: PruneSpec = field(default_factory=PruneSpec)
    distill: dict = field(default_factory=dict)
    """Distillation settings (TrainConfig fields and `tokens`)."""
    device: str = "auto"
    """Where every stage runs: cpu, cuda, or auto (CUDA when present). Under torchrun each process takes its GPU."""
    work_dir: str = "work"
    """Where `minitron run` puts each stage's folder (under `<work_dir>/<name>/`)."""
    embedded: dict = field(default_factory=dict)
    """With `teacher.model: embedded`: `steps` of the embedded teacher's pretraining."""
    importance: dict = field(default_factory=dict)
    """Calibration of the pruning stage: num_samples, seq_len, batch_size (and metric for depth)."""
    quantize: dict = field(default_factory=dict)
    """FP8 settings (`minitron quantize` flags: kv_cache, num_samples, seq_len, ...); empty skips FP8."""
    deploy: dict = field(default_factory=dict)
    """Deployment settings (backend, dry_run, max_batch_size, ...); needs `quantize`."""
    bench: dict = field(default_factory=dict)
    """Throughput sweep of teacher and student (backend, isl_osl, batch_size, num_requests, repeats)."""
    eval: dict = field(default_factory=dict)
    """Eval suite of the teachers and students (suite, limit, data_dir, paper_columns, and fp8: true to add the
    students FP8-fake-quantized with the `quantize` settings)."""
    findings: dict = field(default_factory=dict)
    """The paper's findings at this recipe's scale (Figures 4-10, Table 1), as tables and plots: `out` (the
    folder) and `depth_layers` (the depth-pruned student set beside the width-pruned one); see findings.py."""


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    return cls(**data)


def _training(section, where: str) -> dict:
    """A training section checked against TrainConfig's fields (and its own validation)."""
    from compress.train import TrainConfig

    if not isinstance(section or {}, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(section).__name__}")
    section = dict(section or {})
    tokens = section.pop("tokens", None)
    if tokens is not None and "steps" in section:
        raise ValueError(f"{where}: give `tokens` or `steps`, not both")
    defaults = TrainConfig()
    for key, value in section.items():  # YAML reads 1e-4 as a string: coerce to the field's type
        default = getattr(defaults, key, None)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
            try:
                section[key] = type(default)(float(value))
            except ValueError:
                raise ValueError(f"{where}: {key} must be a number, got {value!r}") from None
    cfg = _build(TrainConfig, section, where)
    try:
        cfg.validate()
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return {**section, **({"tokens": int(float(tokens))} if tokens is not None else {})}


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no recipe at {path}")
    data = yaml.safe_load(path.read_text()) or {}
    teacher = data.pop("teacher", None) or {}
    if "model" not in teacher or "config" not in teacher:
        raise ValueError(f"{path}: `teacher` needs `model` (folder or hub id) and `config` (a config.json)")
    prune = _build(PruneSpec, data.pop("prune", {}) or {}, f"{path}: prune")
    if prune.method not in ("width", "depth"):
        raise ValueError(f"{path}: prune.method must be 'width' or 'depth', not {prune.method!r}")
    for section in ("correct", "distill"):
        if section in data:
            data[section] = _training(data[section], f"{path}: {section}")
    for section in ("embedded", "importance", "quantize", "deploy", "bench", "eval", "findings"):
        if not isinstance(data.get(section) or {}, dict):
            raise ValueError(f"{path}: {section} must be a mapping of settings")
    findings = data.get("findings") or {}
    if findings and set(findings) != {"out", "depth_layers"}:
        raise ValueError(f"{path}: findings needs exactly `out` (a folder) and `depth_layers` (the depth-pruned "
                         f"student's layers), got {', '.join(sorted(findings)) or 'nothing'}")
    recipe = _build(Recipe, {**data, "teacher_model": teacher["model"],
                             "teacher_config": (path.parent / teacher["config"]).resolve(), "prune": prune}, str(path))
    if not recipe.teacher_config.is_file():
        raise FileNotFoundError(f"{path}: teacher.config {teacher['config']} does not exist")
    return recipe
