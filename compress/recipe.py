"""Recipes: YAML files that name a teacher and what to make of it. Each file's header gives its command.

    minitron arch --recipe recipes/llama-3.1-minitron-4b-width.yaml

Unknown fields are errors that name the field and the ones allowed, so a typo never silently falls
back to a default.
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
    prune: PruneSpec = field(default_factory=PruneSpec)


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    return cls(**data)


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
    recipe = _build(Recipe, {**data, "teacher_model": teacher["model"],
                             "teacher_config": (path.parent / teacher["config"]).resolve(), "prune": prune}, str(path))
    if not recipe.teacher_config.is_file():
        raise FileNotFoundError(f"{path}: teacher.config {teacher['config']} does not exist")
    return recipe
