"""The best student under a budget (`minitron search`): enumerate pruned architectures that fit, cut each from
one importance estimate, rank them by held-out LM loss right after pruning, optionally distill the best few
(and the reference) briefly and rank again; write the winner as a checkpoint, the table and a plot beside it.

    minitron search --model work/smollm2/corrected --calib work/smollm2/data --out work/search \
        --params 79.7M --reference hidden=432,ffn=992
    minitron search --model DIR --calib DATA --out DIR --params 0.7 --axes hidden,ffn,layers \
        --distill-top 3 --distill-tokens 24576 --distill-lr 3e-4
    # CPU smoke: tests/compress/test_search.py searches a tiny model in seconds

Budgets (a candidate meets every one given):
- `params`: total parameters, a count ("79.7M", "4.5B") or a fraction of the teacher's ("0.7");
- `active_params`: parameters active per token (mixture-of-experts), the same way;
- `memory_gb`: weights plus the KV cache of `batch` sequences of `context` tokens, in `dtype`;
- `latency`: the student's bytes moved per generated token over the teacher's (`core.cost`), for `batch`
  requests of `context` prompt tokens and 128 generated: 0.6 asks for a student that could decode 1/0.6 as fast.
  Decoding is bound by bytes moved; the FLOPs ratio (what bounds a compute-bound prefill) is in the table too.

Candidates: the hidden, FFN, layer and expert axes take `steps` sizes from the teacher's down to a quarter of
it, aligned as the kernels and transformers want (hidden: multiples of 8 and of the query heads; FFN: of 32;
experts: at least top-k); query heads take every count their KV groups divide, and KV groups every divisor of
the teacher's (`axes` heads, kv_heads). A combination that uses less than `fill` of its tightest budget is
dropped, since a smaller student is not a contender. The paper's preferences are the defaults: width before
depth (`axes` hidden and ffn), attention heads kept. A depth candidate drops the contiguous block of lowest
summed Block Influence (importance's layer scores), so no scan runs per candidate; `minitron prune depth`
scans properly for the depth chosen. Scores come from blocks importance never saw (the data's validation
split), paired block by block, so the winner's margin over a `reference` (a hand-picked target, e.g. the
Minitron ratios) comes with its standard error: right after pruning, or after distillation when the best few
and the reference are distilled (each for the same tokens, on the same data order). With `metric` (a task, as
`minitron prune depth --metric` takes) the candidates are ranked by that task instead, the loss breaking ties;
after distillation they are ranked by loss.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from minitron.core.arch import (
    Dims,
    WidthTarget,
    count_params,
    derive_config,
    dtype_bytes,
    human_count,
    kv_bytes_per_token,
)
from minitron.core.cost import token_cost
from minitron.core.errors import BadInput

log = logging.getLogger("minitron")

AXES = ("hidden", "ffn", "heads", "kv_heads", "layers", "experts")
PAPER_AXES = ("hidden", "ffn")
"""Width before depth, attention heads kept: the paper's findings (its Figure 7 and the 4B-Width recipe)."""
SETTINGS = ("axes", "steps", "fill", "max_candidates", "eval_blocks", "reference", "metric")
"""The search's own settings a recipe's `prune.budget` may give beside the `Budget` fields."""
GENERATED_TOKENS = 128
"""Output length at which the latency budget compares bytes moved per token."""


def parse_count(text: str | float) -> float:
    """'79.7M', '4.5B', '95000000' -> a count; '0.7' (at most 1) -> a fraction of the teacher's."""
    value = str(text).strip().upper()
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(value[-1:], 1.0)
    try:
        number = float(value[:-1] if scale != 1.0 else value) * scale
    except ValueError:
        raise BadInput(f"{text!r} is not a parameter count: write 79.7M, 4.5B, or a fraction such as 0.7") from None
    if number <= 0:
        raise BadInput(f"a parameter budget must be positive, got {text!r}")
    return number


@dataclass(frozen=True)
class Budget:
    """What a student may cost; None leaves that side free."""

    params: str | float | None = None
    """Total parameters: a count or a fraction of the teacher's (`parse_count`)."""
    active_params: str | float | None = None
    """Parameters active per token (mixture-of-experts models), the same way."""
    memory_gb: float | None = None
    """Weights plus the KV cache of `batch` sequences of `context` tokens, in GB (1e9 bytes)."""
    latency: float | None = None
    """Bytes moved per generated token relative to the teacher's (below 1)."""
    context: int = 4096
    """Prompt tokens per sequence, for the memory and latency budgets."""
    batch: int = 1
    """Sequences decoded together, for the memory and latency budgets."""
    dtype: str = "bfloat16"
    """The deployed weights' and KV cache's dtype, for the memory and latency budgets."""

    def limits(self, teacher: dict) -> dict[str, float]:
        """Each given budget as an absolute limit on the column of `measure` it bounds."""
        if self.active_params is not None and "active_params" not in teacher:
            raise BadInput("--active-params budgets a mixture-of-experts model; this one is dense: use --params")
        limits = {}
        for key, value in (("params", self.params), ("active_params", self.active_params)):
            if value is not None:
                number = parse_count(value)
                limits[key] = number * teacher[key] if number <= 1 else number
        if self.memory_gb is not None:
            limits["memory_gb"] = self.memory_gb
        if self.latency is not None:
            limits["latency"] = self.latency
        if not limits:
            raise BadInput("no budget given: pass at least one of --params, --active-params, --memory, --latency")
        if any(v <= 0 for v in limits.values()):
            raise BadInput(f"budgets must be positive, got {limits}")
        return limits


@dataclass
class Candidate:
    """One pruned architecture, what it costs, and how it scored."""

    target: WidthTarget
    layers: int
    costs: dict = field(default_factory=dict)
    loss: float | None = None
    task: float | None = None
    """The `metric` task's score right after pruning, when the search ranks by a task."""
    distilled_loss: float | None = None
    block_losses: torch.Tensor | None = None
    """Held-out loss per block right after pruning."""
    distilled_block_losses: torch.Tensor | None = None
    reference: bool = False

    @property
    def label(self) -> str:
        t = self.target
        groups = f" kv{t.num_key_value_heads}" if t.num_key_value_heads else ""
        experts = f" e{t.num_experts}" if t.num_experts else ""
        return f"h{t.hidden_size} f{t.intermediate_size} q{t.num_attention_heads}{groups} L{self.layers}{experts}"


def measure(config, dims: Dims, layers: int, budget: Budget, teacher_cost: dict | None = None) -> dict:
    """Parameter counts, memory and (against `teacher_cost`) the latency ratio of `dims` keeping `layers` layers."""
    derived = derive_config(config, dims, list(range(layers)))
    counts = count_params(derived)
    value = dtype_bytes(budget.dtype)
    kv = kv_bytes_per_token(layers, dims.kv_heads, dims.head_dim, value) * budget.context * budget.batch
    arch = {**Dims.of(derived).__dict__, **counts}
    cost = token_cost(arch, budget.context, GENERATED_TOKENS, budget.batch, budget.dtype, budget.dtype)
    ratio = {key: cost[key] / teacher_cost[f"{key}_per_token"] if teacher_cost else 1.0 for key in cost}
    return {**counts, "memory_gb": (counts["params"] * value + kv) / 1e9, "bytes_per_token": cost["bytes"],
            "flops_per_token": cost["flops"], "latency": ratio["bytes"], "flops_ratio": ratio["flops"]}


def _sizes(source: int, steps: int, multiple: int) -> list[int]:
    """`steps` sizes from `source` down to a quarter of it, multiples of `multiple` (the source itself always)."""
    sizes = {source} | {max(multiple, round(source * (1 - 0.75 * i / max(steps - 1, 1)) / multiple) * multiple)
                        for i in range(steps)}
    return sorted((s for s in sizes if s <= source), reverse=True)


def enumerate_candidates(config, budget: Budget, axes=PAPER_AXES, steps: int = 8, fill: float = 0.9
                         ) -> tuple[list[Candidate], dict]:
    """Every architecture on the allowed axes that fits the budget and uses at least `fill` of its tightest
    limit, largest first; and the teacher's costs."""
    unknown = set(axes) - set(AXES)
    if unknown:
        raise BadInput(f"unknown axes {', '.join(sorted(unknown))}; choose from {', '.join(AXES)}")
    if not 0 < fill <= 1:
        raise BadInput(f"--fill must lie in (0, 1], got {fill}")
    src = Dims.of(config)
    if "experts" in axes and not src.experts:
        raise BadInput("the experts axis needs a mixture-of-experts model; this one is dense")
    teacher = measure(config, src, src.layers, budget)
    limits = budget.limits(teacher)
    # hidden: multiples of 8 (grouped expert GEMMs want them, and GPUs like them), and of the heads when fixed
    hidden_multiple = 8 if "heads" in axes else math.lcm(8, src.heads)
    groups = [g for g in range(src.kv_heads, 0, -1) if src.kv_heads % g == 0] if "kv_heads" in axes else [None]
    grid = itertools.product(
        _sizes(src.hidden, steps, hidden_multiple) if "hidden" in axes else [src.hidden],
        _sizes(src.ffn, steps, 32) if "ffn" in axes else [src.ffn],
        range(src.heads, 0, -1) if "heads" in axes else [src.heads], groups,
        _sizes(src.layers, steps, 1) if "layers" in axes else [src.layers],
        [e for e in _sizes(src.experts, steps, 1) if e >= src.top_k] if "experts" in axes else [None])
    kept = []
    for hidden, ffn, n_heads, kv_heads, layers, experts in grid:
        if hidden % n_heads or n_heads % (kv_heads or src.kv_heads):
            continue  # transformers wants hidden a multiple of the query heads, and those of the KV groups
        target = WidthTarget(hidden, ffn, n_heads, kv_heads, experts)
        try:
            costs = measure(config, target.resolve(src), layers, budget, teacher)
        except BadInput:
            continue  # a combination the architecture rejects
        use = [costs[key] / limit for key, limit in limits.items()]
        if max(use) <= 1 and max(use) >= fill:
            kept.append(Candidate(target, layers, costs))
    if not kept:
        raise BadInput(f"no architecture on the axes {', '.join(axes)} fits the budget {limits} and uses at least "
                       f"{fill:.0%} of it; allow more axes (--axes), more sizes (--steps), or a lower --fill")
    return sorted(kept, key=lambda c: -c.costs["params"]), teacher


def cut(teacher, scores, candidate: Candidate):
    """The candidate cut from a copy of `teacher` by `scores`: width first, then the contiguous block of lowest
    summed Block Influence."""
    from minitron.compress.depth import drop_layers
    from minitron.compress.width import prune_width

    student = prune_width(copy.deepcopy(teacher), scores, candidate.target)
    k = Dims.of(teacher.config).layers - candidate.layers
    if k:
        sums = scores.layers.unfold(0, k, 1).sum(1)
        start = int(sums.argmin())
        student = drop_layers(student, range(start, start + k))
    return student


def plot(candidates: list[Candidate], winner: Candidate, path: Path, title: str) -> None:
    """Held-out loss against parameters: every candidate, the winner and the reference marked."""
    from minitron.core.plots import figure

    fig = figure(figsize=(7, 4.5))
    ax = fig.subplots()
    plain = [c for c in candidates if not c.reference]
    ax.scatter([c.costs["params"] / 1e6 for c in plain], [c.loss for c in plain], s=14, label="candidates")
    for c, style in ((winner, "*"), *((r, "X") for r in candidates if r.reference)):
        ax.scatter([c.costs["params"] / 1e6], [c.loss], marker=style, s=120,
                   label=("reference " if c.reference else "winner ") + c.label)
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("held-out LM loss after pruning")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(candidates: list[Candidate]) -> pd.DataFrame:
    rows = []
    for rank, c in enumerate(candidates, 1):
        t = c.target
        rows.append({"rank": rank, "label": c.label, "reference": c.reference, "hidden": t.hidden_size,
                     "ffn": t.intermediate_size, "heads": t.num_attention_heads, "layers": c.layers,
                     "kv_heads": t.num_key_value_heads, "experts": t.num_experts,
                     **{k: v for k, v in c.costs.items() if not k.endswith("_per_token")},
                     "loss": c.loss, "task": c.task, "distilled_loss": c.distilled_loss})
    return pd.DataFrame(rows)


def describe(c: Candidate) -> str:
    return f"{c.label} ({human_count(c.costs['params'])} params, loss {c.loss:.4f})"


def parse_reference(text: str) -> tuple[WidthTarget, int | None]:
    """'hidden=432,ffn=992[,heads=9][,layers=30][,experts=6]' -> a width target and a layer count."""
    names = {"hidden": "hidden_size", "ffn": "intermediate_size", "heads": "num_attention_heads",
             "experts": "num_experts"}
    fields, layers = {}, None
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in {*names, "layers"} or not value.strip().isdigit():
            raise BadInput(f"--reference {text!r}: expected comma-separated key=N with keys "
                           f"{', '.join([*names, 'layers'])}, e.g. hidden=432,ffn=992")
        if key == "layers":
            layers = int(value)
        else:
            fields[names[key]] = int(value)
    return WidthTarget(**fields), layers


def _distill(teacher_dir: str, student, tokenizer, data: str, folder: Path, held_out, tokens: int, settings: dict,
             device: str, precision: str) -> torch.Tensor:
    """Distil one candidate for `tokens` and return its held-out loss per block; its folder is removed after."""
    import dataclasses
    import shutil

    from minitron.compress.train import fit
    from minitron.compress.train_config import budgeted_config
    from minitron.core.measure import sequence_losses
    from minitron.core.model_io import save_checkpoint
    from minitron.core.precision import autocast
    from transformers import AutoModelForCausalLM

    save_checkpoint(student, tokenizer, folder / "student")
    cfg = budgeted_config(tokens, **settings)
    cfg = dataclasses.replace(cfg, warmup=max(1, cfg.steps // 10), eval_every=cfg.steps, save_every=cfg.steps)
    fit(str(folder / "student"), data, folder / "distilled", cfg, teacher_dir=teacher_dir, device=device)
    with autocast(device, precision):
        losses = sequence_losses(AutoModelForCausalLM.from_pretrained(folder / "distilled").to(device).eval(),
                                 held_out)
    shutil.rmtree(folder)
    return losses


def search(model: str, calib: str, out: str | Path, budget: Budget, axes=PAPER_AXES, steps: int = 8,
           fill: float = 0.9, reference: str | None = None, max_candidates: int = 40, num_samples: int = 256,
           eval_blocks: int = 32, seq_len: int | None = None, batch_size: int = 8, distill_top: int = 0,
           distill_tokens: int | None = None, distill: dict | None = None, metric: str = "lm-loss",
           metric_scorer=None, device: str = "cpu", precision: str = "auto", seed: int = 0,
           overwrite: bool = False) -> dict:
    """Enumerate, cut and rank the candidates; write the winner as a HF checkpoint in `out` (so the folder is a
    pruned model, as `prune_width` writes one), with `candidates.csv`, `candidates.png` and `minitron.json`
    beside it. Returns the record."""
    from minitron.compress.data import load_blocks
    from minitron.compress.prune import calibration_seq_len, calibration_set, load_and_estimate
    from minitron.core.gguf import local_model
    from minitron.core.measure import sequence_losses
    from minitron.core.model_io import load_config, save_checkpoint
    from minitron.core.precision import autocast
    from minitron.core.records import check_output_dir, output_dir, write_record
    from minitron.core.stats import direction, paired_difference
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    out = check_output_dir(out, overwrite, reads=(model, calib))
    if metric != "lm-loss" and metric_scorer is None:
        raise BadInput(f"metric {metric!r} needs its scorer (minitron.evals.scorers.depth_scorer({metric!r}))")
    if distill_top < 0 or (distill_top and not distill_tokens):
        raise BadInput("--distill-top K needs --distill-tokens N (the budget each of the K students distils for)")
    model = local_model(model)
    config = load_config(model)
    candidates, teacher_costs = enumerate_candidates(config, budget, axes, steps, fill)
    if len(candidates) > max_candidates:
        log.info("%d candidates fit; scoring the %d largest (--max-candidates)", len(candidates), max_candidates)
        candidates = candidates[:max_candidates]
    references = []
    if reference:
        target, layers = parse_reference(reference)
        src = Dims.of(config)
        dims = target.resolve(src)
        target = WidthTarget(dims.hidden, dims.ffn, dims.heads, None, dims.experts or None)  # every axis named
        costs = measure(config, dims, layers or src.layers, budget, teacher_costs)
        references.append(Candidate(target, layers or src.layers, costs, reference=True))
    seq = calibration_seq_len(config, seq_len)
    calibration = calibration_set(calib, model, config, seq, num_samples, seed)
    held_out = list(load_blocks(calib, AutoTokenizer.from_pretrained(model), seq, seed=seed).val
                    .take(eval_blocks).batches(batch_size))
    if not held_out:
        raise BadInput(f"{calib} has no validation blocks of {seq} tokens to score candidates on: pass more data "
                       "or a shorter --seq-len")
    teacher, tokenizer, scores = load_and_estimate(model, calibration, batch_size, "mean", "l2", device, precision)
    task = metric_scorer(batches=held_out, tokenizer=tokenizer, device=device) if metric_scorer else None
    with autocast(device, precision):
        for c in tqdm(candidates + references, desc="search", unit="candidate"):
            student = cut(teacher, scores, c)
            c.block_losses = sequence_losses(student, held_out)
            c.loss = c.block_losses.mean().item()
            c.task = task.fn(student) if task else None
    sign = -1 if task and task.higher_is_better else 1
    ranked = sorted(candidates, key=lambda c: (sign * c.task, c.loss) if task else c.loss)
    with output_dir(out, overwrite) as tmp:
        if distill_top:  # the best few and the reference, each for the same tokens, on the same data order
            settings = {"seq_len": seq, "global_batch": batch_size, "micro_batch": batch_size, **(distill or {})}
            for i, c in enumerate(tqdm(ranked[:distill_top] + references, desc="distil", unit="candidate")):
                c.distilled_block_losses = _distill(model, cut(teacher, scores, c), tokenizer, calib,
                                                    tmp / f"distill-{i}", held_out, distill_tokens, settings, device,
                                                    precision)
                c.distilled_loss = c.distilled_block_losses.mean().item()
            ranked = sorted(ranked[:distill_top], key=lambda c: c.distilled_loss) + ranked[distill_top:]
        winner = ranked[0]
        save_checkpoint(cut(teacher, scores, winner), tokenizer, tmp)
        table(ranked + references).to_csv(tmp / "candidates.csv", index=False, float_format="%.6g")
        plot(ranked + references, winner, tmp / "candidates.png", f"Pruned candidates of {Path(model).name}")
        versus = {}
        for ref in references:  # paired over the held-out blocks: positive means the winner's loss is lower
            versus = {"reference": ref.label, "reference_params": ref.costs["params"], "reference_loss": ref.loss,
                      "reference_distilled_loss": ref.distilled_loss}
            for when, ours, theirs in (("after_pruning", winner.block_losses, ref.block_losses),
                                       ("after_distillation", winner.distilled_block_losses,
                                        ref.distilled_block_losses)):
                if ours is not None:
                    delta, stderr = paired_difference((theirs - ours).tolist())
                    versus[when] = {"winner_lower_by": delta, "stderr": stderr,
                                    "winner_better": direction(delta, stderr)}
        record = write_record(tmp, "search", seed=seed, source=str(model), calib=calib, budget=budget.__dict__,
                              limits=budget.limits(teacher_costs), axes=list(axes), steps=steps, fill=fill,
                              teacher=teacher_costs, candidates=len(ranked),
                              held_out_blocks=sum(len(b) for b in held_out), importance=scores.meta,
                              reference=reference, metric=metric, distill_top=distill_top,
                              distill_tokens=distill_tokens,
                              winner={"label": winner.label, **winner.costs, "loss": winner.loss,
                                      "distilled_loss": winner.distilled_loss}, versus_reference=versus or None)
    log.info("search: %d candidates; winner %s -> %s", len(ranked), describe(winner), out)
    for when in ("after_pruning", "after_distillation"):
        if when in versus:
            log.info("against the reference %s, %s: the winner's loss is lower by %+.4f ± %.4f", versus["reference"],
                     when.replace("_", " "), versus[when]["winner_lower_by"], versus[when]["stderr"])
    return record
