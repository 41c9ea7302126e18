"""What a model scores: held-out LM loss per sequence, the forward KL between two models' logits, and `Scorer`,
the one shape every metric of a whole model takes (the depth scan's candidates, FP8's accuracy check).

    losses = sequence_losses(model, batches)        # one mean cross-entropy per block: paired comparisons
    lm_loss(model, batches)                         # their mean
    forward_kl(student_logits, teacher_logits)      # KL(teacher || student), the distillation objective

Downstream-task scorers (Winogrande, the stdlib tasks) are built by `minitron.evals.scorers` in this shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Scorer:
    """A metric of a whole model: `fn(model) -> float`."""

    name: str
    fn: Callable[[torch.nn.Module], float]
    higher_is_better: bool
    lengths: frozenset[int] | None = None
    """The removal lengths it scores (None: every candidate of the scan). A downstream task costs tens of seconds
    per candidate, so it scores only the blocks of the length being removed, as the paper's Figure 9 does."""


@torch.no_grad()
def sequence_losses(model, batches: list[torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy of every sequence of the token batches [b, s], as one vector: what paired
    comparisons of two models on the same blocks need."""
    device = next(model.parameters()).device
    losses = []
    for ids in batches:
        ids = ids.to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        token_losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        losses.append(token_losses.double().mean(dim=1).cpu())
    return torch.cat(losses)


def lm_loss(model, batches: list[torch.Tensor]) -> float:
    """Mean next-token cross-entropy over token batches [b, s] (all of one length)."""
    return sequence_losses(model, batches).mean().item()


def lm_loss_scorer(batches: list[torch.Tensor], **_context) -> Scorer:
    return Scorer("lm_loss", lambda model: lm_loss(model, batches), higher_is_better=False)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) = sum_v p_t (log p_t - log p_s) with p = softmax(logits / T), averaged over
    tokens, times T^2. Shapes [..., V]; computed in fp32 whatever the input dtype.

    The T^2 factor is Hinton et al.'s: the gradient wrt the logits is (p_s - p_t) / T, so without it the
    gradient would shrink as 1/T and changing the temperature would silently change the effective learning
    rate. At T = 1 it is the plain KL.
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return kl.mean() * temperature**2
