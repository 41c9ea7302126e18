"""Activation importance: the formula, the aggregations, and zeroed units scoring lowest."""

import pytest
import torch
from conftest import FAMILIES, sample_ids, tiny_model
from minitron.compress.importance import Importance, estimate_importance
from minitron.core.arch import Dims
from minitron.core.families import check_supported


def test_default_aggregation_is_modelopts_formula():
    model = tiny_model()
    batches = [sample_ids(seed=1), sample_ids(seed=2)]
    seen = []
    hook = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach()))
    scores = estimate_importance(model, batches)
    hook.remove()
    # ModelOpt: per batch x.abs().mean(seq).pow(2).sum(batch), summed over batches, sqrt at the end
    expected = sum(x.abs().mean(1).pow(2).sum(0) for x in seen).sqrt()
    torch.testing.assert_close(scores.ffn[1], expected)
    assert scores.meta["num_samples"] == 4 and scores.meta["seq_len"] == 16


@pytest.mark.parametrize("seq_agg,batch_agg,reference", [
    ("max", "mean", lambda xs: torch.cat([x.abs().amax(1) for x in xs]).mean(0)),
    ("l2", "max", lambda xs: torch.cat([x.norm(dim=1) for x in xs]).amax(0)),
])
def test_other_aggregations(seq_agg, batch_agg, reference):
    model = tiny_model()
    seen = []
    hook = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach()))
    scores = estimate_importance(model, [sample_ids(seed=1), sample_ids(seed=2)], seq_agg=seq_agg, batch_agg=batch_agg)
    hook.remove()
    torch.testing.assert_close(scores.ffn[0], reference(seen))


def test_zeroed_units_score_lowest():
    model = tiny_model()
    hd = model.config.head_dim
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate_proj.weight[7] = 0  # neuron 7 never activates
            layer.self_attn.v_proj.weight[hd:2 * hd] = 0  # KV group 1 carries nothing: heads 3, 4, 5 output zero
            layer.self_attn.o_proj.weight[11] = 0
            layer.mlp.down_proj.weight[11] = 0
        model.model.embed_tokens.weight[:, 11] = 0  # residual channel 11 stays zero everywhere
    scores = estimate_importance(model, [sample_ids(seed=4)])
    assert (scores.ffn.argmin(dim=1) == 7).all()
    assert scores.ffn[:, 7].abs().max() == 0
    assert set(scores.heads.argsort(dim=1)[:, :3].flatten().tolist()) == {3, 4, 5}
    assert scores.hidden.argmin() == 11
    assert scores.layers.shape == (4,) and (scores.layers > 0).all()


def test_scores_round_trip_through_a_file(tmp_path):
    scores = estimate_importance(tiny_model(), [sample_ids()])
    scores.save(tmp_path / "s.safetensors")
    again = Importance.load(tmp_path / "s.safetensors")
    for name in ("hidden", "ffn", "heads", "layers"):
        assert torch.equal(getattr(again, name), getattr(scores, name))
    assert again.meta == scores.meta


def test_bad_arguments():
    with pytest.raises(ValueError, match="seq_agg must be one of"):
        estimate_importance(tiny_model(), [sample_ids()], seq_agg="median")
    with pytest.raises(ValueError, match="calibration set is empty"):
        estimate_importance(tiny_model(), [])


def test_magnitude_ranking_follows_the_weights():
    """A neuron, head and channel whose weights are zeroed score lowest; a scaled-up one scores highest."""
    from minitron.compress.importance import Importance

    model = tiny_model("llama", layers=2)
    with torch.no_grad():
        mlp, attn = model.model.layers[1].mlp, model.model.layers[1].self_attn
        for m in (mlp.gate_proj, mlp.up_proj):
            m.weight[5] = 0
        mlp.down_proj.weight[:, 5] = 0
        mlp.down_proj.weight[:, 7] *= 10
        attn.q_proj.weight[12:24] = 0  # head 1 (head_dim 12)
        attn.o_proj.weight[:, 12:24] = 0
    scores = Importance.magnitude(model)
    assert scores.ffn[1].argmin() == 5 and scores.ffn[1].argmax() == 7
    assert scores.heads[1].argmin() == 1
    assert scores.hidden.shape == (48,) and scores.layers.shape == (2,) and scores.meta == {"magnitude": True}


def _zero_units(model, neuron: int, kv_group: int, channel: int) -> None:
    """Silence one MLP neuron, one KV group (so its query heads output zero) and one residual channel in every
    layer, through the family's own table of which rows and columns belong to which axis."""
    family = check_supported(model.config)
    d = Dims.of(model.config)
    sizes = {"hidden": d.hidden, "ffn": d.ffn, "q": d.heads * d.head_dim, "kv": d.kv_heads * d.head_dim}
    units = {"ffn": [neuron], "kv": list(range(kv_group * d.head_dim, (kv_group + 1) * d.head_dim)),
             "hidden": [channel]}
    with torch.no_grad():
        for layer in model.model.layers:
            for path, (rows, cols) in family.projections.items():
                weight, offset = layer.get_submodule(path).weight, 0
                for axis in rows:
                    for unit in units.get(axis, ()):
                        weight[offset + unit] = 0
                    offset += sizes[axis]
                if cols in ("ffn", "hidden"):
                    weight[:, units[cols]] = 0
        model.get_input_embeddings().weight[:, channel] = 0
        model.get_output_embeddings().weight[:, channel] = 0


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_scores_silenced_units_lowest(family):
    """Activation and magnitude importance find the units silenced through the family's table. A silent KV
    group silences its query heads' outputs, not their weights, so only activations see it; a LayerNorm
    (Nemotron) centres and biases a silent channel, so there the activations do not put it at the bottom."""
    model = tiny_model(family)
    _zero_units(model, neuron=7, kv_group=1, channel=11)
    active, magnitude = estimate_importance(model, [sample_ids(seed=4)]), Importance.magnitude(model)
    assert (active.ffn.argmin(dim=1) == 7).all() and (magnitude.ffn.argmin(dim=1) == 7).all()
    assert set(active.heads.argsort(dim=1)[:, :3].flatten().tolist()) == {3, 4, 5}
    assert magnitude.hidden.argmin() == 11
    if not check_supported(model.config).norm_centers:
        assert active.hidden.argmin() == 11
