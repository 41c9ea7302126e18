"""What one training run is told: `TrainConfig`, a field per setting with the paper's defaults, and the token
budget that sets its steps. `minitron distill` and `minitron correct` map their flags onto it; a recipe's
`correct` and `distill` sections are checked against its fields.

    cfg = budgeted_config(tokens=94_000_000_000, seq_len=8192, global_batch=1152)   # Table 4's 4B budget
    cfg.steps                                                                        # 9961
"""

from __future__ import annotations

from dataclasses import dataclass

from minitron.core.errors import BadInput
from minitron.core.precision import PRECISIONS


@dataclass
class TrainConfig:
    """Settings of one training run; the defaults are the paper's Table 4 (Llama-3.1-Minitron) where it has one."""

    steps: int = 100
    """Optimizer steps; `--tokens` sets it to tokens / (global_batch * seq_len)."""
    seq_len: int = 8192
    """Tokens per sequence (the paper's context length)."""
    global_batch: int = 1152
    """Sequences per optimizer step, over all processes; reached by gradient accumulation."""
    micro_batch: int = 1
    """Sequences per forward pass on each process."""
    lr: float = 1e-4
    """Peak learning rate of the student (Table 4)."""
    min_lr: float = 1e-5
    """Final learning rate of the cosine decay (Table 4)."""
    warmup: int = 40
    """Linear warm-up steps (Table 4)."""
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 turns clipping off)."""
    temperature: float = 1.0
    """Softmax temperature of the forward KL."""
    lm_weight: float = 0.0
    """Weight of the student's LM cross-entropy beside the KD loss; the paper uses KD only (0)."""
    kd: bool = True
    """False trains the student on its LM loss only (the paper's 'pruning + LM loss' baseline)."""
    correct_teacher: bool = False
    """Train the teacher on its LM loss while it teaches (the paper's Figure 5)."""
    teacher_lr: float = 2e-5
    """Peak learning rate of the teacher under parallel correction: one fifth of the student's peak."""
    teacher_warmup: int = 120
    """Warm-up steps of the teacher under parallel correction (the paper's correction setting)."""
    eval_every: int = 50
    """Validate every N steps (and at step 0 and at the end)."""
    eval_batches: int = 8
    """Validation micro-batches per evaluation."""
    save_every: int = 100
    """Write a resumable checkpoint every N steps (and at the end)."""
    chunk_size: int = 1024
    """Tokens per chunk of the vocabulary-sized losses."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward instead of keeping them: about a third more
    compute for a fraction of the activation memory (compress/memory_plan.py says when a run needs it)."""
    precision: str = "auto"
    """'bf16' autocast, 'fp32', or 'auto' (bf16 on GPUs and CPUs that do bf16 natively: core/precision.py)."""
    seed: int = 0
    """Seeds the data order and any random initialisation."""
    spike_factor: float = 5.0
    """Stop when a step's loss exceeds this multiple of the running mean (from a run's 4th step on)..."""
    spike_floor: float = 0.1
    """...and exceeds it by at least this many nats: a KD loss near zero moves several-fold between batches
    without anything going wrong (0.0018 -> 0.0113 at step 98 of a tiny recipe on an AMD CPU)."""

    def validate(self, world: int = 1) -> None:
        if self.global_batch % (world * self.micro_batch):
            raise BadInput(f"--global-batch {self.global_batch} must be a multiple of processes x micro batch "
                             f"({world} x {self.micro_batch})")
        positive = ["steps", "seq_len", "global_batch", "micro_batch", "eval_every", "save_every", "chunk_size"]
        for name in positive:
            if getattr(self, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.min_lr <= self.lr:
            raise BadInput(f"need 0 < --min-lr <= --lr, got {self.min_lr} and {self.lr}")
        if self.precision not in PRECISIONS:
            raise BadInput(f"--precision must be {', '.join(PRECISIONS)}, not {self.precision!r}")


def steps_for_tokens(tokens: int, global_batch: int, seq_len: int) -> int:
    """Optimizer steps that spend a token budget (rounded up: the budget is a floor, not a cap)."""
    return max(1, -(-int(tokens) // (global_batch * seq_len)))


def budgeted_config(tokens: int | None = None, **fields) -> TrainConfig:
    """`TrainConfig(**fields)`, its steps set by the token budget `tokens` when given (rounded up)."""
    cfg = TrainConfig(**fields)
    if tokens is not None:
        if tokens < 1:
            raise BadInput(f"--tokens must be a positive token budget, got {tokens}")
        cfg.steps = steps_for_tokens(tokens, cfg.global_batch, cfg.seq_len)
    return cfg
