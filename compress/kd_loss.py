"""Logit-only forward-KL distillation loss, chunked over tokens so full-vocabulary logits are never stored.

    from minitron.compress.kd_loss import chunked_kd_loss, hidden_states, lm_head_of

    with torch.no_grad():
        t_hidden = hidden_states(teacher, input_ids)
    s_hidden = hidden_states(student, input_ids)
    s_head, t_head = lm_head_of(student), lm_head_of(teacher)
    labels = F.pad(input_ids[:, 1:], (0, 1), value=-100)  # next token; the last position has none
    out = chunked_kd_loss(s_hidden, s_head.weight, t_hidden, t_head.weight, labels=labels,
                          student_lm_head_bias=s_head.bias, teacher_lm_head_bias=t_head.bias,
                          student_softcap=s_head.softcap, teacher_softcap=t_head.softcap)
    out.loss.backward()                             # KD only: lm_weight defaults to 0, as in the paper
    print(out.kd.item(), out.lm.item(), out.tokens)  # the LM loss is still reported when labels are given

The Minitron recipe distills with the forward KL divergence KL(p_teacher || p_student) on the logits only
(no intermediate-state losses), with the LM cross-entropy off by default. With Llama-3's 128k vocabulary the
logits are the largest tensors of a step: 8k tokens x 128256 x 4 bytes is 4 GiB per fp32 copy, and the naive
loss holds several (student and teacher logits, both log-softmaxes, their difference, their gradients).
`chunked_kd_loss` starts from the decoders' last hidden states instead and materialises the logits of
`chunk_size` tokens at a time, so memory grows with the chunk, not with the batch.

`chunked_lm_loss` is the same pass without a teacher: the plain LM cross-entropy, for the no-KD baseline and
validation. `forward_kl` is the plain full-tensor definition, kept as the reference the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

import torch
import torch.nn.functional as F
from minitron.core.errors import BadInput

IGNORE_INDEX = -100  # the label value Hugging Face and F.cross_entropy skip


@dataclass
class KDLoss:
    """`loss` carries the gradient; `kd` (the T^2-scaled KL) and `lm` (the student's cross-entropy, None
    without labels) are detached, for logging. `tokens` is how many tokens the averages ran over."""

    loss: torch.Tensor
    kd: torch.Tensor
    lm: torch.Tensor | None
    tokens: int


def _chunk(h, s_w, s_b, th, t_w, t_b, tgt, temperature, lm_scale, kd_scale, grads, rows, softcaps):
    """One chunk: returns its sums of KL and of cross-entropy, and adds its gradients into `grads`.

    The matmuls make the chunk's student and (unless th is None: LM loss only) teacher logits, the only
    [chunk, V] fp32 buffers; all the softmax arithmetic then runs in place over them, row block by row block,
    because even one full-size temporary (logsumexp's, or exp(log p_t)) would raise the chunk's peak by half.
    A function of its own so the buffers are freed on return, before the next chunk allocates its own.
    A soft-capped student (Gemma 2: cap * tanh(z / cap)) needs one more such buffer, the cap's derivative.
    """
    grad_h, grad_w, grad_b = grads
    need_grad = any(g is not None for g in grads)
    s_cap, t_cap = softcaps
    z_s = F.linear(h, s_w, s_b).float()
    cap_slope = None
    if s_cap:
        z_s.div_(s_cap).tanh_()
        if need_grad:
            cap_slope = z_s.square().neg_().add_(1.0)  # d(cap * tanh(z / cap))/dz = 1 - tanh^2
        z_s.mul_(s_cap)
    z_t = None if th is None else F.linear(th, t_w, t_b).float()
    if z_t is not None and t_cap:
        z_t.div_(t_cap).tanh_().mul_(t_cap)
    kd_sum = torch.zeros((), dtype=torch.float32, device=z_s.device)
    ce_sum = None if tgt is None else torch.zeros_like(kd_sum)
    block = max(1, len(h) // 8)
    teacher_blocks = repeat(None) if z_t is None else z_t.split(block)
    for a, b, start in zip(z_s.split(block), teacher_blocks, range(0, len(h), block)):
        grad_ce = None
        if tgt is not None:
            t = tgt[start:start + block]
            lse = torch.logsumexp(a, dim=-1)
            ce_sum += (lse - a.gather(1, t[:, None]).squeeze(1)).sum()
            if need_grad and lm_scale:
                # softmax - onehot at T = 1; over `a` itself when there is no KD term to keep it for
                grad_ce = (a.sub_(lse[:, None]) if b is None else a - lse[:, None]).exp_()
                grad_ce[torch.arange(len(t), device=a.device), t] -= 1.0
                grad_ce.mul_(lm_scale)
        if b is None:
            continue
        # a, b := log p_s, log p_t at temperature T
        a.div_(temperature)
        a -= torch.logsumexp(a, dim=-1, keepdim=True)
        b.div_(temperature)
        b -= torch.logsumexp(b, dim=-1, keepdim=True)
        p_t = b.exp()
        kd_sum += torch.dot(p_t.flatten(), b.sub_(a).flatten())  # sum p_t (log p_t - log p_s)
        if need_grad:
            # d(T^2 KL / N)/dz_s = T (p_s - p_t) / N, in place over log p_s.
            a.exp_().sub_(p_t).mul_(kd_scale)
            if grad_ce is not None:
                a += grad_ce
    if need_grad:
        del z_t
        if cap_slope is not None:
            z_s.mul_(cap_slope)  # through the cap, back to the uncapped logits
        g = z_s.to(h.dtype)  # the gradient wrt the chunk's student logits
        if grad_h is not None:
            grad_h[rows] = g @ s_w
        if grad_w is not None:
            grad_w.addmm_(g.t(), h)
        if grad_b is not None:
            grad_b += g.sum(0, dtype=torch.float32)
    return kd_sum, ce_sum


class _ChunkedKD(torch.autograd.Function):
    """The loss (KD, LM or both) and its gradients in one chunked pass over the tokens, during the forward.

    Why not `torch.utils.checkpoint` around each chunk: checkpointing saves only the hidden chunk, but the
    backward then recomputes every chunk (student and teacher matmuls again) and, per chunk, keeps autograd's
    saved log-softmax output alive together with the gradient buffers of the logits. Here the gradient of the
    loss wrt the chunk's student logits has a closed form, T (p_s - p_t) / N (plus lm_weight
    (softmax(z_s) - onehot) / N for the LM term), so each chunk's logits are turned into grad_hidden and
    grad_weight contributions on the spot and freed: nothing of size [tokens, vocab] outlives a chunk, no
    matmul is repeated, and the backward only scales the stored gradients by the incoming scalar. It is the
    approach of Liger-Kernel's fused linear cross-entropy. The cost: gradient buffers the size of the
    student's hidden states and lm_head weight are held from the forward to the backward, which the backward
    of a plain loss would allocate anyway.

    Measured by tests/benchmarks/kd_loss_memory.py (vocab 128256, 2048 tokens, hidden 1024, fp32, forward +
    backward, chunks of 1024, 2-core CPU): naive 6.9 GiB peak; per-chunk checkpointing 2.5 GiB and 30 s;
    this function 1.6 GiB (0.49 GiB of it the weight gradient) and 14 s.
    """

    @staticmethod
    def forward(ctx, s_hidden, s_weight, s_bias, t_hidden, t_weight, t_bias, targets, temperature: float,
                chunk_size: int, lm_weight: float, need: tuple[bool, bool, bool], autocast_dtype, softcaps):
        n, device = s_hidden.shape[0], s_hidden.device
        denom = max(n, 1)  # no counted token: a zero loss with zero gradients rather than 0/0
        # Each side's matmuls run in its lm_head's dtype (casting a hidden chunk is cheap, a [V, H] weight is
        # not), or in autocast's. Autocast itself is switched off and its dtype applied by hand, because the
        # gradients are written into preallocated buffers, which it would not cast.
        s_dtype = autocast_dtype or s_weight.dtype
        t_dtype = None if t_weight is None else autocast_dtype or t_weight.dtype
        with torch.autocast(device.type, enabled=False):
            s_w = s_weight.to(s_dtype)
            s_b = None if s_bias is None else s_bias.to(s_dtype)
            t_w = None if t_weight is None else t_weight.to(t_dtype)
            t_b = None if t_bias is None else t_bias.to(t_dtype)
            grads = (torch.empty_like(s_hidden) if need[0] else None,
                     # accumulated with addmm_, so no [V, H] temporary per chunk: exact in fp32, and in bf16
                     # the same rounding as accumulating a gradient over micro-batches
                     torch.zeros_like(s_w) if need[1] else None,
                     torch.zeros(s_weight.shape[0], dtype=torch.float32, device=device) if need[2] else None)
            kd_sum = torch.zeros((), dtype=torch.float32, device=device)
            ce_sum = None if targets is None else torch.zeros((), dtype=torch.float32, device=device)
            for start in range(0, n, chunk_size):
                rows = slice(start, start + chunk_size)
                th = None if t_hidden is None else t_hidden[rows].to(t_dtype)
                kd_part, ce_part = _chunk(s_hidden[rows].to(s_dtype), s_w, s_b, th, t_w, t_b,
                                          None if targets is None else targets[rows], temperature,
                                          lm_weight / denom, temperature / denom, grads, rows, softcaps)
                kd_sum += kd_part
                if ce_sum is not None:
                    ce_sum += ce_part
        grad_h, grad_w, grad_b = grads

        kd = kd_sum * temperature**2 / denom
        ce = None if ce_sum is None else ce_sum / denom
        loss = kd + lm_weight * ce if lm_weight else kd.clone()  # a clone: `kd` itself is non-differentiable
        ctx.grads = (grad_h, None if grad_w is None else grad_w.to(s_weight.dtype),
                     None if grad_b is None else grad_b.to(s_bias.dtype))
        ctx.mark_non_differentiable(kd, *([] if ce is None else [ce]))
        return loss, kd, ce

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_kd, _grad_ce):
        # Scaled in place: the stored gradients serve this one backward, and an out-of-place product would
        # briefly hold a second lm_head-sized gradient.
        if ctx.grads is None:
            raise RuntimeError("chunked_kd_loss supports one backward per forward: its gradients are formed in "
                               "the forward and consumed by the backward")
        grad_h, grad_w, grad_b = (None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in ctx.grads)
        ctx.grads = None
        return grad_h, grad_w, grad_b, *([None] * 10)


def chunked_kd_loss(
    student_hidden: torch.Tensor,
    student_lm_head_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_lm_head_weight: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    labels: torch.Tensor | None = None,
    lm_weight: float = 0.0,
    student_lm_head_bias: torch.Tensor | None = None,
    teacher_lm_head_bias: torch.Tensor | None = None,
    student_softcap: float | None = None,
    teacher_softcap: float | None = None,
) -> KDLoss:
    """Forward KL from the teacher's to the student's next-token distribution, `chunk_size` tokens at a time.

    Hidden states are the decoders' final (normed) outputs, [B, S, H_s] and [B, S, H_t]; the hidden sizes may
    differ (a width-pruned student), the vocabularies may not. Logits are computed per chunk as
    hidden @ weight.T (+ bias), upcast to fp32 for the softmaxes, and dropped before the next chunk; see
    `_ChunkedKD` for why the gradients are formed in the forward rather than with activation checkpointing.
    Peak memory is about two [chunk_size, V] fp32 buffers plus the lm_head-sized weight gradient.

    labels: [B, S] next-token targets, already shifted by the caller; tokens labelled -100 (padding, document
    boundaries) are left out of both averages, and the student's cross-entropy on them is reported as `lm`.
    With lm_weight > 0 it is also trained on: loss = kd + lm_weight * lm. The paper distills with KD alone,
    so the weight is 0 by default.
    A model that soft-caps its logits (Gemma 2's final_logit_softcapping: cap * tanh(z / cap)) passes its cap.
    The value equals `forward_kl` on the full logits (and, with labels, kd + lm_weight * F.cross_entropy).
    The teacher gets no gradient.
    """
    vocab_s, vocab_t = student_lm_head_weight.shape[0], teacher_lm_head_weight.shape[0]
    if vocab_s != vocab_t:
        raise BadInput(f"vocabulary mismatch: the student's lm_head has {vocab_s} rows and the teacher's "
                         f"{vocab_t}; teacher and student must share a tokenizer/vocabulary")
    if student_hidden.shape[-1] != student_lm_head_weight.shape[1]:
        raise BadInput(f"student hidden size {student_hidden.shape[-1]} does not match its lm_head weight "
                         f"{tuple(student_lm_head_weight.shape)}")
    if teacher_hidden.shape[-1] != teacher_lm_head_weight.shape[1]:
        raise BadInput(f"teacher hidden size {teacher_hidden.shape[-1]} does not match its lm_head weight "
                         f"{tuple(teacher_lm_head_weight.shape)}")
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise BadInput(f"student and teacher hidden states cover different tokens: "
                         f"{tuple(student_hidden.shape[:-1])} vs {tuple(teacher_hidden.shape[:-1])}")
    if chunk_size < 1:
        raise BadInput(f"chunk_size must be positive, got {chunk_size}")
    if temperature <= 0:
        raise BadInput(f"temperature must be positive, got {temperature}")

    loss, kd, lm, tokens = _apply(student_hidden, student_lm_head_weight, student_lm_head_bias, teacher_hidden,
                                  teacher_lm_head_weight, teacher_lm_head_bias, labels, temperature, chunk_size,
                                  lm_weight, (student_softcap, teacher_softcap))
    return KDLoss(loss=loss, kd=kd.detach(), lm=None if lm is None else lm.detach(), tokens=tokens)


def chunked_lm_loss(hidden: torch.Tensor, lm_head_weight: torch.Tensor, labels: torch.Tensor,
                    chunk_size: int = 1024, bias: torch.Tensor | None = None, softcap: float | None = None
                    ) -> torch.Tensor:
    """The LM cross-entropy of one model from its hidden states [B, S, H], `chunk_size` tokens at a time.

    Equal to F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100), without the full
    logits: the same chunked pass as `chunked_kd_loss` with no teacher. For training without KD (the LM-loss
    baseline) and for validation. If every label is -100 it is 0, not F.cross_entropy's NaN.
    """
    if hidden.shape[-1] != lm_head_weight.shape[1]:
        raise BadInput(f"hidden size {hidden.shape[-1]} does not match the lm_head weight "
                         f"{tuple(lm_head_weight.shape)}")
    if chunk_size < 1:
        raise BadInput(f"chunk_size must be positive, got {chunk_size}")
    loss, _, _, _ = _apply(hidden, lm_head_weight, bias, None, None, None, labels, 1.0, chunk_size, 1.0,
                           (softcap, None))
    return loss


def _apply(s_hidden, s_weight, s_bias, t_hidden, t_weight, t_bias, labels, temperature, chunk_size, lm_weight,
           softcaps):
    """Flatten the tokens, drop the ignored ones, and run `_ChunkedKD`; returns (loss, kd, lm, tokens)."""
    token_shape = s_hidden.shape[:-1]
    s_hidden = s_hidden.reshape(-1, s_hidden.shape[-1])
    if t_hidden is not None:
        t_hidden = t_hidden.detach().reshape(-1, t_hidden.shape[-1])
    targets = None
    if labels is not None:
        if labels.shape != token_shape:
            raise BadInput(f"labels have shape {tuple(labels.shape)}, the hidden states cover "
                             f"{tuple(token_shape)} tokens")
        flat = labels.reshape(-1)
        keep = (flat != IGNORE_INDEX).nonzero().squeeze(1)
        if len(keep) < len(flat):
            # Drop ignored tokens before the vocabulary-sized work; autograd scatters the gradient back.
            s_hidden = s_hidden.index_select(0, keep)
            t_hidden = None if t_hidden is None else t_hidden.index_select(0, keep)
        # The student's LM loss is computed whenever labels are given, for logging; it is trained on only
        # when lm_weight > 0. An out-of-range label would be a device-side assert on GPU, hence the check.
        targets = flat.index_select(0, keep)
        vocab = s_weight.shape[0]
        if targets.numel() and not (0 <= int(targets.min()) and int(targets.max()) < vocab):
            raise BadInput(f"labels must lie in [0, {vocab}) or be {IGNORE_INDEX}")

    # Gradients are only formed when someone will ask for them (not under no_grad, e.g. validation).
    grad_on = torch.is_grad_enabled()
    need = (grad_on and s_hidden.requires_grad, grad_on and s_weight.requires_grad,
            grad_on and s_bias is not None and s_bias.requires_grad)
    t_weight = None if t_weight is None else t_weight.detach()
    t_bias = None if t_bias is None else t_bias.detach()
    device_type = s_hidden.device.type
    autocast_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    loss, kd, lm = _ChunkedKD.apply(s_hidden, s_weight, s_bias, t_hidden, t_weight, t_bias, targets,
                                    float(temperature), int(chunk_size), float(lm_weight), need, autocast_dtype,
                                    softcaps)
    return loss, kd, lm, s_hidden.shape[0]


class LMHead(NamedTuple):
    """What turns a model's last hidden states into its logits: cap * tanh((h @ weight.T + bias) / cap)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    softcap: float | None


def lm_head_of(model) -> LMHead:
    config = getattr(model, "config", None)
    # The chunked loss computes logits as hidden @ W.T + b, soft-capped where the model caps them; a model that
    # rescales them otherwise would be distilled against the wrong distribution.
    if getattr(config, "logit_scale", None) not in (None, 1.0):
        raise BadInput(f"{type(model).__name__} applies logit_scale={config.logit_scale} to its logits, "
                       "which chunked_kd_loss does not reproduce")
    head = model.get_output_embeddings()
    if head is None:
        raise BadInput(f"{type(model).__name__} has no output embedding (lm_head)")
    return LMHead(head.weight, getattr(head, "bias", None), getattr(config, "final_logit_softcapping", None))


def hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The decoder's final hidden states [B, S, H], running `model.model` only so no logits are produced;
    feed them to `chunked_kd_loss` with `lm_head_of(model)`."""
    return model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
