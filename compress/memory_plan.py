"""Memory per GPU and time of one training run, from the configs alone: what `minitron run --dry-run` prints for
each training stage of a recipe written for GPUs, and what `fit` checks before it reads any weights.

    minitron run recipes/llama-3.1-minitron-4b-depth.yaml --dry-run              # the recipe's cluster: 8 x 80 GB
    minitron run recipes/llama-3.1-minitron-4b-width.yaml --dry-run --gpus 16 --gpu-memory 141

    plan = plan_training(student_config, teacher_config, cfg, gpus=8)     # a TrainingPlan
    plan.total, plan.parts                                               # bytes per GPU, and what holds them
    fitting_micro_batch(student_config, teacher_config, cfg, 8, 80e9)    # the largest that fits, or None

What one process holds at the peak of a step in compress/train.py (FSDP2 over `gpus` processes, AdamW, bf16
autocast over fp32 weights, the chunked KD loss):
- the student's fp32 weights, gradients and AdamW's two moments, each sharded: 16 bytes per parameter / gpus;
- the teacher, sharded: frozen in bf16 on GPUs (fp32 on CPUs), or trained like the student under Figure 5's
  parallel correction;
- what FSDP2 unshards (more than one process): the root group (embeddings, lm_heads, final norms), which stays
  gathered from the forward to the backward with its gradients, and two decoder layers of each model in flight
  (the one computing and the one prefetched);
- autocast's bf16 copies of the student's weights: each matmul casts its fp32 weight and autograd keeps the copy
  for the backward, so a step holds a bf16 copy of every decoder weight, unsharded;
- the activations autograd saves, `activation_bytes` per token per decoder layer (below), for a micro-batch of
  seq_len tokens, and the gradients of one layer's activations during its backward (about as large); with
  activation checkpointing only each layer's input, plus one layer's activations and gradients while it is
  recomputed;
- the chunked KD loss: the gradient buffers it holds from the forward to the backward (the student's final
  hidden states and lm_head weight, fp32), the teacher's final hidden states, and one chunk's student and
  teacher logits;
- on GPUs, a reserve: CUDA_CONTEXT_BYTES for the CUDA context and NCCL's buffers, and FRAGMENTATION of the rest
  for the caching allocator (assumptions, not measurements).

The activation coefficients were measured, not derived: tests/compress/test_memory_plan.py counts the bytes of
every tensor autograd saves in a forward of tiny models of each family, and tests/benchmarks/training_memory.py
compares a whole plan with the peak resident memory of real training steps on this CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from minitron.core.arch import Dims, count_params, human_count
from minitron.core.errors import BadInput
from minitron.core.families import check_supported

GB = 1e9
MEASURED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")
"""Families whose `activation_bytes` matches what autograd saves (within 10%, tests/compress/test_memory_plan.py).
Others are planned by the same formula and the plan says so: Gemma 2's eager soft-capped attention keeps its
seq x seq scores, Phi-3's fused projections keep whole fused outputs, Nemotron has LayerNorms and an ungated MLP,
and the expert blocks keep their routing copies. Under transformers 4.57 attention also gets an explicit causal
mask, with which a CPU's SDPA takes its math path and keeps the seq x seq probabilities (measured: 2 x heads x
seq_len bytes per token per layer in fp32), which the plan leaves out: GPU kernels do not keep them."""
CUDA_CONTEXT_BYTES = 1.5 * GB
"""The CUDA context, cuBLAS workspaces and NCCL's buffers of one process: about 1-2 GB on H100s (an assumption)."""
FRAGMENTATION = 0.05
"""The caching allocator's share lost to fragmentation, added on GPUs (an assumption)."""
ASSUMED_TFLOPS = 400.0
"""Sustained bf16 TFLOP/s per GPU for the time estimate: 40% of an H100's 989 dense (an assumption, not a
measurement; Megatron-LM reports 40-50% model FLOPs utilisation at this scale)."""


def activation_bytes(config, bf16: bool) -> float:
    """Bytes autograd keeps for the backward per token per decoder layer of `config` (training, no checkpointing).

    The residual stream is fp32 (the weights are), so every norm keeps its fp32 input and normalized output
    (8 bytes per channel). Under bf16 autocast each projection that reads a norm's output keeps its own bf16
    cast of it (2 bytes per channel per projection); in fp32 the two norm outputs are kept once each. Attention
    keeps its query, key, value and output (2 per value in bf16, 4 in fp32), per-head q/k norms their fp32
    inputs and outputs, and each routed expert's gated MLP four activations of its width (gate, activation, up,
    product). The constant is the norms' per-token scales and attention's log-sum-exp.
    """
    import transformers

    dims, family = Dims.of(config), check_supported(config)
    h, q, kv = dims.hidden, dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    if int(transformers.__version__.split(".")[0]) < 5:  # 4.x repeats K and V to every query head before SDPA
        kv = q
    value = 2 if bf16 else 4
    readers = sum(1 for _, column in family.projections.values() if column == "hidden")
    norm_outputs = readers * 2 * h if bf16 else 2 * 4 * h
    per_head_norms = 8 * (q + kv) if family.kept else 0
    experts = dims.top_k or 1
    routing = 4 * dims.experts if dims.experts else 0  # the router's fp32 logits
    return (8 * h * len(family.hidden_norms) + norm_outputs + 2 * value * (q + kv) + per_head_norms
            + experts * 4 * value * dims.ffn + routing + 4 * len(family.hidden_norms) + 4 * dims.heads)


@dataclass(frozen=True)
class TrainingPlan:
    """Bytes one process holds at the peak of a training step, by what holds them, and the run's length."""

    gpus: int
    micro_batch: int
    parts: dict[str, float]
    """Bytes per process: weights, gradients, optimizer, teacher, unsharded, bf16 copies, activations, loss,
    reserve."""
    steps: int
    tokens: float
    """Tokens the run trains on: steps x global batch x seq_len."""
    flops: float
    """FLOPs of the whole run: 6 per student weight and 2 per teacher weight for every token (forward and
    backward of the student, the teacher's forward), with their lm_heads and attention."""
    caveat: str = ""
    """What the plan does not model for this family, if anything."""

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def hours(self, tflops: float = ASSUMED_TFLOPS) -> float:
        """Wall-clock hours if every GPU sustains `tflops`."""
        return self.flops / (self.gpus * tflops * 1e12) / 3600

    def describe(self, gpu_bytes: float | None = None) -> str:
        """One line: the total, its largest parts, and steps and time at ASSUMED_TFLOPS."""
        parts = ", ".join(f"{name} {value / GB:.1f}" for name, value in self.parts.items() if value >= 0.05 * GB)
        fits = "" if gpu_bytes is None else (" (fits)" if self.total <= gpu_bytes else
                                             f" (does NOT fit {gpu_bytes / GB:.0f} GB)")
        return (f"{self.total / GB:.1f} GB per GPU{fits} = {parts}; micro-batch {self.micro_batch}; {self.steps} steps"
                f" over {human_count(int(self.tokens))} tokens, about {self.hours():,.1f} h on {self.gpus} GPU(s) at "
                f"{ASSUMED_TFLOPS:.0f} TFLOP/s each (assumed)" + (f"; {self.caveat}" if self.caveat else ""))


def _counts(config) -> dict[str, float]:
    """Parameter counts of a model's parts: all, the root group FSDP keeps gathered, and one decoder layer."""
    dims = Dims.of(config)
    counts = count_params(config)
    root = counts["params"] - counts["non_embedding_params"] + dims.hidden  # embeddings, lm_head, final norm
    return {"params": counts["params"], "decoder": counts["non_embedding_params"], "root": root,
            "layer": counts["non_embedding_params"] / dims.layers,
            "active": counts.get("active_params", counts["params"])}


def _activations(config, tokens: int, bf16: bool, checkpointing: bool) -> float:
    """Activation bytes at the peak of one model's backward: every layer's saved activations and one layer's
    gradients of them (about as large); with checkpointing each layer's fp32 input instead, plus the layer
    being recomputed and its gradients."""
    dims, per_layer = Dims.of(config), activation_bytes(config, bf16)
    if checkpointing:
        return (4 * dims.hidden * dims.layers + 2 * per_layer) * tokens
    return per_layer * (dims.layers + 1) * tokens


def plan_training(student, teacher, cfg, gpus: int = 1, device: str = "cuda") -> TrainingPlan:
    """The memory per process and the length of training `student` (a config) from `teacher` (a config, or None
    for correction and the LM-loss baseline) with the TrainConfig `cfg` on `gpus` processes of `device`."""
    from minitron.core.precision import uses_bf16

    cfg.validate(gpus)  # the global batch splits evenly over the processes and their micro-batches
    gpu = device.startswith("cuda")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and (gpu or uses_bf16("cpu", "auto")))
    s, dims = _counts(student), Dims.of(student)
    tokens = cfg.micro_batch * cfg.seq_len
    parts = {"weights": 4 * s["params"] / gpus, "gradients": 4 * s["params"] / gpus,
             "optimizer": 8 * s["params"] / gpus}
    activations = _activations(student, tokens, bf16, cfg.activation_checkpointing)
    sharded = gpus > 1  # one process keeps everything whole, and FSDP2 unshards nothing
    unsharded = 8 * (s["root"] + 2 * s["layer"]) if sharded else 0.0  # gathered weights and their gradients
    flops_per_token = 6 * (s["active"] - s["root"] + dims.hidden * dims.vocab) + 3 * _attention_flops(student, cfg)
    teacher_hidden = 0.0
    if teacher is not None:
        t, t_dims = _counts(teacher), Dims.of(teacher)
        if cfg.correct_teacher:  # trained beside the student: its state, gradients and activations too
            parts["teacher"] = 16 * t["params"] / gpus
            activations += _activations(teacher, tokens, bf16, cfg.activation_checkpointing)
            t_bytes, gathered = 4, 8
        else:  # frozen: bf16 on GPUs, fp32 on CPUs (compress/train.py)
            t_bytes = 4 if not gpu or cfg.precision == "fp32" else 2
            parts["teacher"], gathered = t_bytes * t["params"] / gpus, t_bytes
        unsharded += gathered * (t["root"] + 2 * t["layer"]) if sharded else 0.0
        teacher_hidden = t_bytes * t_dims.hidden * tokens
        teacher_flops = 2 * (t["active"] - t["root"] + t_dims.hidden * t_dims.vocab) + _attention_flops(teacher, cfg)
        flops_per_token += (3 if cfg.correct_teacher else 1) * teacher_flops
    parts["unsharded"] = unsharded
    parts["bf16 copies"] = 2 * s["decoder"] if bf16 else 0.0
    parts["activations"] = activations
    logits = 4 * dims.vocab * min(cfg.chunk_size, tokens) * (2 if teacher is not None else 1)
    # the student's final hidden states and their gradient, its lm_head's gradient, the teacher's hidden states
    parts["loss"] = 8 * dims.hidden * tokens + 4 * dims.hidden * dims.vocab + teacher_hidden + logits
    if gpu:
        parts["reserve"] = CUDA_CONTEXT_BYTES + FRAGMENTATION * sum(parts.values())
    run_tokens = float(cfg.steps) * cfg.global_batch * cfg.seq_len
    unmeasured = sorted({c.model_type for c in (student, teacher) if c is not None} - set(MEASURED_FAMILIES))
    caveat = f"activations of {', '.join(unmeasured)} not measured: estimated as for Llama" if unmeasured else ""
    return TrainingPlan(gpus, cfg.micro_batch, parts, cfg.steps, run_tokens, flops_per_token * run_tokens, caveat)


def _attention_flops(config, cfg) -> float:
    """Forward attention FLOPs per token: QK^T and PV over the causal context, seq_len / 2 keys on average."""
    dims = Dims.of(config)
    return 4 * dims.layers * dims.heads * dims.head_dim * cfg.seq_len / 2


def fitting_micro_batch(student, teacher, cfg, gpus: int, gpu_bytes: float, device: str = "cuda") -> int | None:
    """The largest micro-batch (dividing global_batch / gpus) whose plan fits `gpu_bytes`, or None."""
    per_process = cfg.global_batch // gpus
    for micro in sorted((m for m in range(1, per_process + 1) if per_process % m == 0), reverse=True):
        if plan_training(student, teacher, dataclasses.replace(cfg, micro_batch=micro), gpus, device
                         ).total <= gpu_bytes:
            return micro
    return None


def check_fits(plan: TrainingPlan, student, teacher, cfg, gpu_bytes: float, where: str, device: str = "cuda"
               ) -> None:
    """Refuse a plan over `gpu_bytes`, naming a micro-batch or activation checkpointing that fits."""
    if plan.total <= gpu_bytes:
        return
    micro = fitting_micro_batch(student, teacher, cfg, plan.gpus, gpu_bytes, device)
    if micro is not None:
        fix = f"set micro_batch: {micro} (the largest that fits)"
    elif not cfg.activation_checkpointing and fitting_micro_batch(
            student, teacher, dataclasses.replace(cfg, activation_checkpointing=True), plan.gpus, gpu_bytes,
            device) is not None:
        fix = "set activation_checkpointing: true (recompute each layer in the backward)"
    else:
        fix = "use more GPUs, or GPUs with more memory"
    largest = max(plan.parts, key=plan.parts.get)
    raise BadInput(f"{where} needs {plan.total / GB:.1f} GB per GPU on {plan.gpus} GPU(s) of {gpu_bytes / GB:.0f} GB "
                   f"({largest} {plan.parts[largest] / GB:.1f} GB of it): {fix}")
