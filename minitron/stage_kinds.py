"""The runner's stages, declared once: each one's name and the folder it writes under `<work_dir>/<recipe name>/`.
`minitron.pipeline.plan` builds its stages from these declarations and hands the findings the folders it made,
keyed by these names; the findings look stages up through the same declarations, so neither spells the other's
names or paths.

    DISTILL.name, DISTILL.folder       # "distill", "distilled"
    DISTILL.seeded(2, first=0)         # "distill-seed2" writing "distilled-seed2": the same stage under seed 2
    seeds_of(folders, DISTILL)         # its folders under every seed the recipe ran, its own seed first

What lies inside a folder is the stage's library function's output (a HF checkpoint with `metrics.jsonl`, a
`depth_scan.csv`, ...); the eval and bench stages hold one run per model label (`teacher`, `corrected`, and the
students by pruning method: `width`, `depth`; `<label>-fp8` for FP8) beside `table/` or `report/`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StageKind:
    name: str
    """How `--rerun`, the plan and the findings name the stage."""
    folder: str
    """Its output folder under the recipe's folder."""

    def seeded(self, seed: int, first: int) -> StageKind:
        """The same stage trained (or drawn) under `seed`: itself for the recipe's own seed `first`."""
        if seed == first:
            return self
        return dataclasses.replace(self, name=f"{self.name}-seed{seed}", folder=f"{self.folder}-seed{seed}")


DATA = StageKind("data", "data")
TEACHER = StageKind("teacher", "teacher")
"""A converted GGUF teacher; the embedded default's folder is EMBEDDED_TEACHER (its model in `teacher/` inside)."""
EMBEDDED_TEACHER = StageKind("teacher", "embedded")
CORRECT = StageKind("correct", "corrected")
PRUNE = StageKind("prune", "pruned")
DISTILL = StageKind("distill", "distilled")
PRUNE_DEPTH = StageKind("prune-depth", "pruned-depth")
DISTILL_DEPTH = StageKind("distill-depth", "distilled-depth")
SCAN_DEPTH = StageKind("scan-depth", "depth-scan")
PRUNE_RANDOM = StageKind("prune-random", "pruned-random")
PRUNE_MAGNITUDE = StageKind("prune-magnitude", "pruned-magnitude")
PRUNE_ORIGINAL = StageKind("prune-original", "pruned-from-original")
DISTILL_ORIGINAL = StageKind("distill-original", "distilled-from-original")
DISTILL_PARALLEL = StageKind("distill-parallel", "distilled-parallel-correction")
DISTILL_RANDOM_INIT = StageKind("distill-random-init", "distilled-random-init")
DISTILL_RANDOM_PRUNING = StageKind("distill-random-pruning", "distilled-random-pruning")
TRAIN_LM_LOSS = StageKind("train-lm-loss", "trained-lm-loss")
QUANTIZE = StageKind("quantize", "fp8")
DEPLOY = StageKind("deploy", "deploy")
"""Its folder is `deploy-<backend>`."""
BENCH = StageKind("bench", "bench")
EVAL = StageKind("eval", "evals")
EVAL_SEEDS = StageKind("eval-seeds", "evals-seeds")
"""The students of the findings' extra seeds, evaluated as `width-seed<N>` and `depth-seed<N>`."""
FINDINGS = StageKind("findings", "findings")
"""Its folder is the recipe's `findings.out`."""


def seeds_of(folders: dict[str, Path], kind: StageKind) -> list[Path]:
    """The folders of stage `kind` under every seed the recipe ran: its own first, then `<name>-seed<N>` by N."""
    prefix = f"{kind.name}-seed"
    extra = sorted((int(key[len(prefix):]), folder) for key, folder in folders.items()
                   if key.startswith(prefix) and key[len(prefix):].isdigit())
    return [folders[kind.name]] + [folder for _, folder in extra]
