"""The chunked KD loss against the naive full-vocabulary definition: values and gradients, masks, LM mixing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from minitron.compress.kd_loss import chunked_kd_loss, chunked_lm_loss, hidden_states, lm_head_of
from minitron.core.measure import forward_kl

B, S, H_S, H_T, V = 2, 13, 16, 24, 97  # 26 tokens: chunk sizes 1, 4, 7 and 26 split them evenly or not
ATOL = 1e-5


def _inputs(seed: int = 0, bias: bool = False):
    g = torch.Generator().manual_seed(seed)
    s_hidden = torch.randn(B, S, H_S, generator=g).requires_grad_()
    s_weight = (torch.randn(V, H_S, generator=g) * 0.5).requires_grad_()
    t_hidden = torch.randn(B, S, H_T, generator=g)
    t_weight = torch.randn(V, H_T, generator=g) * 0.5
    s_bias = (torch.randn(V, generator=g) * 0.1).requires_grad_() if bias else None
    return s_hidden, s_weight, t_hidden, t_weight, s_bias


def _labels(seed: int = 1) -> torch.Tensor:
    labels = torch.randint(0, V, (B, S), generator=torch.Generator().manual_seed(seed))
    labels[0, :4] = -100  # e.g. padding
    labels[1, -1] = -100  # the last position has no next token
    return labels


def _assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 26, 1024])
def test_matches_naive_value_and_gradients(chunk_size, temperature):
    s_hidden, s_weight, t_hidden, t_weight, _ = _inputs()
    out = chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, temperature=temperature, chunk_size=chunk_size)
    grads = torch.autograd.grad(out.loss, (s_hidden, s_weight))

    ref = forward_kl(s_hidden @ s_weight.T, t_hidden @ t_weight.T, temperature)
    ref_grads = torch.autograd.grad(ref, (s_hidden, s_weight))
    _assert_close(out.loss, ref)
    _assert_close(out.kd, ref.detach())
    for got, want in zip(grads, ref_grads):
        _assert_close(got, want)
    assert out.lm is None and out.tokens == B * S
    assert not out.kd.requires_grad


@pytest.mark.parametrize("chunk_size", [3, 8, 1024])
def test_masked_tokens_are_excluded(chunk_size):
    s_hidden, s_weight, t_hidden, t_weight, _ = _inputs()
    labels = _labels()
    out = chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, temperature=2.0, chunk_size=chunk_size,
                          labels=labels)
    grads = torch.autograd.grad(out.loss, (s_hidden, s_weight))

    keep = labels != -100
    ref = forward_kl((s_hidden @ s_weight.T)[keep], (t_hidden @ t_weight.T)[keep], 2.0)
    ref_grads = torch.autograd.grad(ref, (s_hidden, s_weight))
    _assert_close(out.loss, ref)
    for got, want in zip(grads, ref_grads):
        _assert_close(got, want)
    assert out.tokens == int(keep.sum())
    assert grads[0][~keep].abs().max() == 0  # masked positions get no gradient
    # With labels the student's LM loss is reported even when it is not trained on.
    _assert_close(out.lm, F.cross_entropy((s_hidden @ s_weight.T).reshape(-1, V), labels.reshape(-1)).detach())


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("chunk_size", [5, 1024])
def test_lm_weight_adds_cross_entropy(chunk_size, temperature):
    s_hidden, s_weight, t_hidden, t_weight, s_bias = _inputs(bias=True)
    labels = _labels()
    out = chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, temperature=temperature, chunk_size=chunk_size,
                          labels=labels, lm_weight=0.3, student_lm_head_bias=s_bias)
    grads = torch.autograd.grad(out.loss, (s_hidden, s_weight, s_bias))

    s_logits = s_hidden @ s_weight.T + s_bias
    keep = labels != -100
    kd = forward_kl(s_logits[keep], (t_hidden @ t_weight.T)[keep], temperature)
    ce = F.cross_entropy(s_logits.reshape(-1, V), labels.reshape(-1))
    ref = kd + 0.3 * ce
    ref_grads = torch.autograd.grad(ref, (s_hidden, s_weight, s_bias))
    _assert_close(out.loss, ref)
    _assert_close(out.kd, kd.detach())
    _assert_close(out.lm, ce.detach())
    for got, want in zip(grads, ref_grads):
        _assert_close(got, want)


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_lm_loss_matches_cross_entropy(chunk_size):
    s_hidden, s_weight, _, _, s_bias = _inputs(bias=True)
    labels = _labels()
    loss = chunked_lm_loss(s_hidden, s_weight, labels, chunk_size, bias=s_bias)
    grads = torch.autograd.grad(loss, (s_hidden, s_weight, s_bias))
    ref = F.cross_entropy((s_hidden @ s_weight.T + s_bias).reshape(-1, V), labels.reshape(-1))
    ref_grads = torch.autograd.grad(ref, (s_hidden, s_weight, s_bias))
    _assert_close(loss, ref)
    for got, want in zip(grads, ref_grads):
        _assert_close(got, want)
    assert chunked_lm_loss(s_hidden, s_weight, torch.full((B, S), -100)).item() == 0


def test_teacher_bias_and_upstream_gradient_scale():
    s_hidden, s_weight, t_hidden, t_weight, _ = _inputs()
    t_bias = torch.randn(V) * 0.1
    out = chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, chunk_size=6, teacher_lm_head_bias=t_bias)
    (0.25 * out.loss).backward()  # e.g. gradient accumulation over 4 micro-batches
    ref = forward_kl(s_hidden @ s_weight.T, t_hidden @ t_weight.T + t_bias)
    ref_grad = torch.autograd.grad(0.25 * ref, s_weight)[0]
    _assert_close(out.loss, ref)
    _assert_close(s_weight.grad, ref_grad)


def test_kl_zero_for_identical_distributions_and_nonnegative():
    s_hidden, s_weight, _, _, _ = _inputs()
    same = chunked_kd_loss(s_hidden, s_weight, s_hidden.detach(), s_weight.detach(), chunk_size=5)
    assert abs(same.loss.item()) < 1e-6
    logits = torch.randn(4, 10, V)
    assert abs(forward_kl(logits, logits.clone()).item()) < 1e-6
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randn(8, V, generator=g) * 3, torch.randn(8, V, generator=g) * 3
        assert forward_kl(a, b).item() > 0
    s_hidden, s_weight, t_hidden, t_weight, _ = _inputs(seed=3)
    assert chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight).loss.item() > 0


def test_no_grad_and_frozen_student_head():
    s_hidden, s_weight, t_hidden, t_weight, _ = _inputs()
    ref = forward_kl(s_hidden @ s_weight.T, t_hidden @ t_weight.T).detach()
    with torch.no_grad():  # validation: no gradient buffers are formed
        _assert_close(chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, chunk_size=4).loss, ref)
    frozen = s_weight.detach()
    out = chunked_kd_loss(s_hidden, frozen, t_hidden, t_weight, chunk_size=4)
    out.loss.backward()
    assert frozen.grad is None and s_hidden.grad is not None


def test_all_tokens_masked_gives_zero_not_nan():
    s_hidden, s_weight, t_hidden, t_weight, _ = _inputs()
    out = chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, labels=torch.full((B, S), -100), lm_weight=1.0)
    out.loss.backward()
    assert out.loss.item() == 0 and out.tokens == 0
    assert s_weight.grad.abs().max() == 0


def test_autocast_bf16_keeps_parameter_dtypes():
    s_hidden, s_weight, t_hidden, t_weight, _ = _inputs()
    ref = forward_kl(s_hidden @ s_weight.T, t_hidden @ t_weight.T).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, chunk_size=8)
    out.loss.backward()
    assert s_weight.grad.dtype == torch.float32 and s_hidden.grad.dtype == torch.float32
    assert abs(out.loss.item() - ref.item()) < 0.05 * ref.item()  # bf16 logits: close, not exact


def test_bf16_teacher_with_fp32_student():
    """The teacher's matmul runs in its own dtype; the student's gradients stay exact fp32."""
    s_hidden, s_weight, t_hidden, t_weight, _ = _inputs()
    t_hidden, t_weight = t_hidden.bfloat16(), t_weight.bfloat16()
    out = chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, chunk_size=8)
    grad = torch.autograd.grad(out.loss, s_weight)[0]
    ref = forward_kl(s_hidden @ s_weight.T, (t_hidden @ t_weight.T).float())
    _assert_close(out.loss, ref)
    _assert_close(grad, torch.autograd.grad(ref, s_weight)[0])


def test_vocab_mismatch_is_refused():
    s_hidden, s_weight, t_hidden, _, _ = _inputs()
    with pytest.raises(ValueError, match=r"97 rows and the teacher's 96; teacher and student must share a tok"):
        chunked_kd_loss(s_hidden, s_weight, t_hidden, torch.randn(V - 1, H_T))


def test_token_count_mismatch_is_refused():
    s_hidden, s_weight, t_hidden, t_weight, _ = _inputs()
    with pytest.raises(ValueError, match="different tokens"):
        chunked_kd_loss(s_hidden, s_weight, t_hidden[:, :-1], t_weight)
    with pytest.raises(ValueError, match="labels"):
        chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, labels=torch.zeros(B, S - 1, dtype=torch.long))


@pytest.mark.parametrize("chunk_size", [5, 1024])
def test_softcapped_logits_match_naive_value_and_gradients(chunk_size):
    """Gemma 2 caps its logits at cap * tanh(z / cap); both sides' caps, and the student's through its gradient."""
    s_hidden, s_weight, t_hidden, t_weight, _ = _inputs()
    labels = _labels()
    out = chunked_kd_loss(s_hidden, s_weight, t_hidden, t_weight, chunk_size=chunk_size, labels=labels,
                          lm_weight=0.5, student_softcap=3.0, teacher_softcap=2.0)
    grads = torch.autograd.grad(out.loss, (s_hidden, s_weight))

    def capped(z, cap):
        return cap * torch.tanh(z / cap)

    keep = labels != -100
    s_logits = capped(s_hidden @ s_weight.T, 3.0)
    ref = (forward_kl(s_logits[keep], capped(t_hidden @ t_weight.T, 2.0)[keep])
           + 0.5 * F.cross_entropy(s_logits.reshape(-1, V), labels.reshape(-1)))
    _assert_close(out.loss, ref)
    for got, want in zip(grads, torch.autograd.grad(ref, (s_hidden, s_weight))):
        _assert_close(got, want)
    lm = chunked_lm_loss(s_hidden, s_weight, labels, chunk_size, softcap=3.0)
    _assert_close(lm, F.cross_entropy(s_logits.reshape(-1, V), labels.reshape(-1)))


@pytest.mark.parametrize("family", ["llama", "gemma2"])  # gemma2 soft-caps its logits
def test_on_hf_models(family):
    """hidden_states + lm_head_of give the same loss and gradients as the models' own logits."""
    from conftest import sample_ids, tiny_model

    student, teacher = tiny_model(family, hidden=48, seed=0), tiny_model(family, hidden=48, ffn=192, layers=2, seed=1)
    ids = sample_ids(seq=12)
    s_head, t_head = lm_head_of(student), lm_head_of(teacher)
    assert (s_head.softcap is not None) == (family == "gemma2")
    with torch.no_grad():
        t_hidden = hidden_states(teacher, ids)
        t_logits = teacher(ids).logits
    out = chunked_kd_loss(hidden_states(student, ids), s_head.weight, t_hidden, t_head.weight, chunk_size=5,
                          student_lm_head_bias=s_head.bias, teacher_lm_head_bias=t_head.bias,
                          student_softcap=s_head.softcap, teacher_softcap=t_head.softcap)
    weight = student.model.layers[0].mlp.down_proj.weight
    got = torch.autograd.grad(out.loss, weight)[0]
    ref = forward_kl(student(ids).logits, t_logits)
    _assert_close(out.loss, ref)
    _assert_close(got, torch.autograd.grad(ref, weight)[0])
