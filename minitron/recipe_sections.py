"""The typed sections of a recipe beside `teacher`, `prune`, `correct` and `distill`: one dataclass each, a
docstring per field. `check_section` refuses, when the recipe is loaded (so at `--dry-run`, before any stage
runs), a field a section does not have and a value of the wrong type, naming the field's path and the allowed
names:

    recipes/x.yaml: bench: unknown field batchsize; allowed: backend, batch_size, isl_osl, num_requests, repeats

A section keeps only the fields the recipe sets; the stage that reads it supplies the defaults documented here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Literal

from minitron.core.errors import BadInput

Count = Annotated[int, "at least 1"]
"""A whole number of things (samples, requests, steps): 0 or less is refused, not run."""


@dataclass
class EmbeddedSection:
    """The self-trained tiny teacher (`teacher.model: embedded`)."""

    steps: Count = 300
    """Pretraining steps of the embedded teacher."""


@dataclass
class DepthScanSection:
    """A depth scan: Figures 8 and 9 (`findings.depth_scan`, a scan of their own), or the one that picks the depth
    student (the `importance` section)."""

    metric: str = "lm-loss"
    """lm-loss, or a task scored on the blocks of the pruned length (winogrande, stdlib-next-line, ...:
    minitron.evals.scorers)."""
    scan_lengths: str | None = None
    """Extra block lengths scored by LM loss: "1,2"."""
    scan_samples: Count | None = None
    """Blocks each candidate is scored on [default: the importance section's num_samples]."""


@dataclass
class ImportanceSection(DepthScanSection):
    """Calibration of the pruning stage, and the depth scan that picks the depth-pruned student (its `metric`
    picks the block; lm-loss by default)."""

    num_samples: Count = 1024
    """Calibration blocks of the importance estimate (the paper: 1024)."""
    seq_len: Count | None = None
    """Tokens per calibration block [default: min(4096, the model's positions)]."""
    batch_size: Count = 8
    """Blocks per forward pass."""


@dataclass
class QuantizeSection:
    """FP8 with ModelOpt (`minitron quantize` flags)."""

    kv_cache: Literal["auto", "fp8"] = "auto"
    """fp8, or auto (the model's dtype)."""
    num_samples: Count = 512
    """Calibration blocks."""
    seq_len: Count | None = None
    """Tokens per block [default: min(512, positions)]."""
    batch_size: Count = 8
    """Blocks per calibration forward pass."""
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Dtype of the unquantized weights kept in the export."""
    eval_blocks: Count = 64
    """Held-out blocks for the LM loss and token KL of FP8 against the unquantized model."""
    seed: int = 0
    """Seed of the calibration sample."""


@dataclass
class DeploySection:
    """A TensorRT-LLM or vLLM deployment folder of the FP8 student (`minitron deploy` flags); needs `quantize`."""

    backend: Literal["trtllm", "vllm"] = "trtllm"
    """trtllm or vllm."""
    dry_run: bool = True
    """Write the folder and the commands; build and run nothing (no engine on a CPU machine)."""
    engine: Literal["tensorrt"] | None = None
    """tensorrt: build a serialized TensorRT engine (TensorRT-LLM 1.2.x)."""
    max_batch_size: Count | None = None
    """Default: the paper's, 64 for the 4B class and 32 for 8B-12B."""
    max_seq_len: Count | None = None
    """Default: min(8192, positions)."""
    max_num_tokens: Count = 8192
    """Tokens per engine iteration."""
    gpu_memory_gb: float = 80.0
    """The GPU the deployment is sized for (H100 80GB)."""


@dataclass
class BenchSection:
    """The throughput sweep of the teacher and the students (`minitron bench sweep` flags)."""

    backend: Literal["hf", "vllm", "trtllm", "openai"] = "hf"
    """hf, vllm, trtllm or openai."""
    isl_osl: str = "64/32"
    """Grid of ISL/OSL pairs: "128/128,2048/128"."""
    batch_size: Count = 8
    """Requests in flight at once."""
    num_requests: Count = 16
    """Requests per point and repeat."""
    repeats: Count = 3
    """Measured repeats per point (median, min, max)."""


@dataclass
class EvalSection:
    """The eval suite of the teachers and the students, and the Table-1-style table."""

    suite: str = "fixtures"
    """A suite name (evals/suites/) or a suite YAML."""
    limit: Count | None = None
    """At most this many items per task (a smoke setting; results are then not the task's)."""
    data_dir: str | None = None
    """Where `minitron eval fetch` put the datasets, for an offline machine."""
    paper_columns: list | None = None
    """The paper's Table 1 columns shown beside ours."""
    fp8: bool = False
    """Also evaluate the students FP8-fake-quantized with the `quantize` settings."""
    allow_code_execution: bool = False
    """Let the suite's code tasks (HumanEval, MBPP) run model-generated programs (evals/sandbox.py); a suite with
    such tasks is refused at load without it."""


@dataclass
class FindingsSection:
    """The paper's findings at this recipe's scale (Figures 4-10, Table 1): tables, plots, samples, verdicts."""

    out: str = ""
    """The folder the findings are written to (required), e.g. results/smollm2."""
    baselines: bool = True
    """Also train Figures 4-6's extra students; false reports on the recipe's own students only."""
    seeds: int = 1
    """How many seeds every student a verdict compares trains under (and every random pruning draws); a verdict
    holds only when it holds in each. 3 or more let a verdict see the seed-to-seed noise."""
    tolerance: float = 0.05
    """How far, relative, a headline number of `minitron run --verify` may move from the committed one."""
    depth_scan: DepthScanSection | None = None
    """A depth scan of the findings' own (metric, scan_lengths, scan_samples)."""


@dataclass
class ClusterSection:
    """The GPUs a recipe is written for: `minitron run --dry-run` plans every training stage's memory per GPU on
    them and refuses a stage that does not fit, naming the micro-batch that does (compress/memory_plan.py)."""

    gpus: Count = 8
    """GPUs (torchrun processes) of each training stage."""
    gpu_memory_gb: float = 80.0
    """Memory of each GPU in GB (1e9 bytes): 80 for an H100 80GB."""


SECTIONS = {"embedded": EmbeddedSection, "importance": ImportanceSection, "quantize": QuantizeSection,
            "deploy": DeploySection, "bench": BenchSection, "eval": EvalSection, "findings": FindingsSection,
            "cluster": ClusterSection}


def _type_name(kind) -> str:
    return getattr(kind, "__name__", str(kind))


def checked(value, kind, where: str):
    """`value` as `kind` (int, float, str, bool, list, a section, a Literal's choices, a Count, or one of them |
    None), or a clear error."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None:
            return None
        kind = options[0]
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise BadInput(f"{where} must be one of {', '.join(map(str, choices))}, not {value!r}")
        return value
    if typing.get_origin(kind) is Annotated:
        kind, *rules = typing.get_args(kind)
        value = checked(value, kind, where)
        if "at least 1" in rules and value < 1:
            raise BadInput(f"{where} must be at least 1, not {value!r}")
        return value
    if dataclasses.is_dataclass(kind):
        return check_section(kind, value, where)
    if typing.get_origin(kind) in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise BadInput(f"{where} must be a list, not {value!r}")
        return typing.get_origin(kind)(value)
    if kind in (int, float) and isinstance(value, str):  # YAML reads 1e-4 and 1e9 as strings
        try:
            value = float(value)
        except ValueError:
            raise BadInput(f"{where} must be a number, not {value!r}") from None
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = (isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))) or (
        kind is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise BadInput(f"{where} must be {'a whole number' if kind is int else 'a ' + _type_name(kind)}, "
                       f"not {value!r}")
    return float(value) if kind is float else value


def check_section(cls, data, where: str) -> dict:
    """The recipe's settings of section `cls`, checked field by field: only what the recipe sets."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"{where} must be a mapping of settings, not {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    allowed = sorted(hints)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise BadInput(f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                       f"allowed: {', '.join(allowed)}")
    return {key: checked(value, hints[key], f"{where}.{key}") for key, value in data.items()}
