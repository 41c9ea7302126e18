"""Mixture-of-experts pruning against the unpruned model (Mixtral, Qwen3-MoE; run under transformers 4.57 too,
whose experts are one module each, where 5.x fuses them): keeping every expert and neuron reproduces the logits,
removing an expert equals masking its router logit, removing an expert's neurons or a hidden channel equals
zeroing them, and the pruned checkpoint reloads and generates with and without a KV cache."""

import copy

import pytest
import torch
from conftest import MOE_FAMILIES, flat_importance, logits, sample_ids, tiny_model
from minitron.compress.experts import expert_weights, sparse_block
from minitron.compress.importance import Importance, estimate_importance
from minitron.compress.width import plan_width, prune_width
from minitron.core.arch import Dims, WidthTarget
from minitron.core.families import check_supported
from minitron.core.model_io import save_checkpoint
from transformers import AutoModelForCausalLM

TOL = 1e-4




def blocks(model):
    family = check_supported(model.config)
    return [(sparse_block(layer, family)[1], family) for layer in model.model.layers]


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_keeping_every_expert_and_neuron_reorders_but_reproduces_logits(family):
    model = tiny_model(family)
    ids = sample_ids()
    scores = estimate_importance(model, [sample_ids(seed=7)])
    target = WidthTarget(48, 96, 6, 2, num_experts=4)
    plan = plan_width(scores, Dims.of(model.config), target)
    assert any(not torch.equal(kept, torch.arange(4)) for kept in plan.experts), "experts should be reordered"
    pruned = prune_width(copy.deepcopy(model), scores, target)
    torch.testing.assert_close(logits(pruned, ids), logits(model, ids), atol=TOL, rtol=0)


def _mask_router(model, removed: int) -> None:
    """The router never picks expert `removed`: its logit is -inf before the softmax and the top-k."""
    renormalize = model.config.model_type == "mixtral" or model.config.norm_topk_prob

    def hook(_module, _args, output):
        if not isinstance(output, tuple):  # transformers 4.57: the gate is a Linear returning the logits
            return output.index_fill(-1, torch.tensor([removed]), float("-inf"))
        router_logits, weights, _ = output  # transformers 5: the router returns its choice
        probs = torch.softmax(router_logits.index_fill(-1, torch.tensor([removed]), float("-inf")).float(), dim=-1)
        top, chosen = torch.topk(probs, model.config.num_experts_per_tok, dim=-1)
        return router_logits, (top / top.sum(-1, keepdim=True) if renormalize else top).to(weights.dtype), chosen

    for block, _ in blocks(model):
        block.gate.register_forward_hook(hook)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_removing_an_expert_equals_masking_its_router_logit(family):
    model = tiny_model(family)
    ids = sample_ids()
    pruned = prune_width(copy.deepcopy(model), flat_importance(model, experts=(slice(None), 1)),
                         WidthTarget(num_experts=3))
    assert Dims.of(pruned.config).experts == 3
    masked = copy.deepcopy(model)
    _mask_router(masked, removed=1)
    torch.testing.assert_close(logits(pruned, ids), logits(masked, ids), atol=TOL, rtol=0)
    assert (logits(pruned, ids) - logits(model, ids)).abs().max() > 1e-2  # the expert mattered


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_removing_expert_neurons_equals_zeroing_them(family):
    """Each expert keeps its own best neurons: expert 0 loses neurons 0-31, the others 32-63."""
    model = tiny_model(family)
    ids = sample_ids()
    imp = flat_importance(model)
    imp.ffn[:, 0, :32] = 0
    imp.ffn[:, 1:, 32:64] = 0
    pruned = prune_width(copy.deepcopy(model), imp, WidthTarget(intermediate_size=64))
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for block, fam in blocks(masked):
            for j in range(4):
                expert_weights(block, fam, j)[2][:, slice(0, 32) if j == 0 else slice(32, 64)] = 0
    torch.testing.assert_close(logits(pruned, ids), logits(masked, ids), atol=TOL, rtol=0)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_removing_hidden_channels_equals_masking_them(family):
    model = tiny_model(family)
    ids = sample_ids()
    removed = torch.arange(0, 48, 2)  # 24 left: a multiple of 8 for the grouped expert GEMMs, and of the 6 heads
    pruned = prune_width(copy.deepcopy(model), flat_importance(model, hidden=removed), WidthTarget(hidden_size=24))
    masked = copy.deepcopy(model)
    with torch.no_grad():
        masked.model.embed_tokens.weight[:, removed] = 0
        for layer, (block, fam) in zip(masked.model.layers, blocks(masked)):
            layer.self_attn.o_proj.weight[removed] = 0
            for j in range(4):
                expert_weights(block, fam, j)[2][removed] = 0
    # half the channels go, so rounding differs more than in test_width.py: 1e-3 in a dense Llama too (measured)
    torch.testing.assert_close(logits(pruned, ids), logits(masked, ids), atol=3e-3, rtol=0)
    unscaled = prune_width(copy.deepcopy(model), flat_importance(model, hidden=removed), WidthTarget(hidden_size=24),
                           rescale_norms=False)
    assert (logits(unscaled, ids) - logits(masked, ids)).abs().max() > 1e-1


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_pruned_experts_reload_and_generate(family, tokenizer, tmp_path):
    model = tiny_model(family)
    scores = estimate_importance(model, [sample_ids(seed=3)])
    pruned = prune_width(model, scores, WidthTarget(hidden_size=24, intermediate_size=64, num_experts=3))
    save_checkpoint(pruned, tokenizer, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert Dims.of(reloaded.config).experts == 3 and Dims.of(reloaded.config).ffn == 64
    ids = sample_ids()
    torch.testing.assert_close(logits(reloaded, ids), logits(pruned, ids), atol=1e-5, rtol=0)
    prompt = tokenizer("def parse(text):", return_tensors="pt").input_ids
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(reloaded.generate(prompt, use_cache=True, **kw), reloaded.generate(prompt, use_cache=False, **kw))


def test_expert_targets_are_validated():
    src = Dims.of(tiny_model("mixtral").config)
    with pytest.raises(ValueError, match="routes each token to 2; pick 2..4"):
        WidthTarget(num_experts=1).resolve(src)
    with pytest.raises(ValueError, match="--hidden-size 36 is not a multiple of 8.*pick 32 or 40"):
        WidthTarget(hidden_size=36).resolve(src)
    with pytest.raises(ValueError, match="mixture-of-experts models only"):
        WidthTarget(num_experts=2).resolve(Dims.of(tiny_model("llama").config))


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_silenced_experts_and_neurons_score_lowest(family):
    """An expert whose down projection writes nothing scores zero; so does a neuron no expert activates."""
    model = tiny_model(family)
    with torch.no_grad():
        for block, fam in blocks(model):
            expert_weights(block, fam, 2)[2].zero_()
            for j in range(4):
                expert_weights(block, fam, j)[0][7] = 0  # gate row 7: silu(0) * up = 0
                expert_weights(block, fam, j)[1][7] = 0
    scores = estimate_importance(model, [sample_ids(seed=4)])
    assert (scores.experts.argmin(dim=1) == 2).all() and scores.experts[:, 2].abs().max() == 0
    assert (scores.ffn[:, [0, 1, 3]].argmin(dim=-1) == 7).all()
    magnitude = Importance.magnitude(model)
    assert (magnitude.ffn.argmin(dim=-1) == 7).all()
