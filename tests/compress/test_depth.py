"""Depth pruning: removing layers equals making them identity; the scan; a reloadable model."""

import copy

import pandas as pd
import pytest
import torch
from conftest import FAMILIES, MOE_FAMILIES, logits, sample_ids, tiny_model
from minitron.compress.depth import best_block, drop_layers, layers_removed, parse_layers, plot_scan, scan
from minitron.compress.experts import expert_weights, sparse_block
from minitron.compress.importance import estimate_importance
from minitron.core.arch import Dims
from minitron.core.families import check_supported
from minitron.core.measure import Scorer, lm_loss_scorer
from minitron.core.model_io import save_checkpoint
from transformers import AutoModelForCausalLM


@pytest.mark.parametrize("family", FAMILIES + MOE_FAMILIES)
def test_removing_a_block_equals_skipping_it(family):
    model = tiny_model(family, layers=6)
    ids = sample_ids()
    skipped = copy.deepcopy(model)
    with torch.no_grad():  # a layer whose attention and MLP write nothing is skipped by the residual stream
        for i in (2, 3):
            layer = skipped.model.layers[i]
            layer.self_attn.o_proj.weight.zero_()
            family_of = check_supported(skipped.config)
            if family_of.experts:
                _, block = sparse_block(layer, family_of)
                for j in range(Dims.of(skipped.config).experts):
                    expert_weights(block, family_of, j)[2].zero_()
            else:
                layer.mlp.down_proj.weight.zero_()
    pruned = drop_layers(copy.deepcopy(model), [2, 3])
    assert pruned.config.num_hidden_layers == 4
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1, 2, 3]
    torch.testing.assert_close(logits(pruned, ids), logits(skipped, ids), atol=1e-4, rtol=0)
    with layers_removed(model, [2, 3]):
        torch.testing.assert_close(logits(model, ids), logits(skipped, ids), atol=1e-4, rtol=0)
    torch.testing.assert_close(logits(model, ids), logits(tiny_model(family, layers=6), ids))  # restored


@pytest.mark.parametrize("family", FAMILIES + MOE_FAMILIES)
def test_depth_pruned_checkpoint_generates_with_a_kv_cache(family, tokenizer, tmp_path):
    pruned = drop_layers(tiny_model(family, tie=family == "qwen2"), [0, 3])
    save_checkpoint(pruned, tokenizer, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == 2
    prompt = tokenizer("import os", return_tensors="pt").input_ids
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(reloaded.generate(prompt, use_cache=True, **kw), reloaded.generate(prompt, use_cache=False, **kw))


def test_scan_table_and_plot(tmp_path):
    model = tiny_model(layers=6)
    batches = [sample_ids(seed=9, batch=4)]
    scorer = lm_loss_scorer(batches)
    influence = estimate_importance(model, batches).layers
    table = scan(model, [2, 3], [scorer], layer_influence=influence)
    contiguous = table[table.method == "contiguous"]
    assert sorted(contiguous.groupby("block_len").size().items()) == [(1, 6), (2, 5), (3, 4)]  # single layers always
    assert set(table.method) == {"contiguous", "single-layer-rank", "block-influence"}
    row = contiguous[(contiguous.block_len == 2) & (contiguous.start == 1)].iloc[0]
    with layers_removed(model, [1, 2]):
        assert row.lm_loss == pytest.approx(scorer.fn(model))
    chosen = best_block(table, 3, scorer)
    assert len(chosen) == 3 and chosen == list(range(chosen[0], chosen[0] + 3))
    assert contiguous[contiguous.block_len == 3].lm_loss.min() == pytest.approx(
        contiguous[(contiguous.block_len == 3) & (contiguous.start == chosen[0])].lm_loss.iloc[0])
    plot_scan(table, [scorer], tmp_path / "scan.png")
    assert (tmp_path / "scan.png").stat().st_size > 10_000
    table.to_csv(tmp_path / "scan.csv", index=False)
    assert list(pd.read_csv(tmp_path / "scan.csv").columns) == ["method", "block_len", "start", "end", "layers", "lm_loss"]


def test_a_scorer_of_one_length_scores_only_that_length(tmp_path):
    model = tiny_model(layers=6)
    batches = [sample_ids(seed=9, batch=4)]
    calls = []
    task = Scorer("task", lambda m: calls.append(m.config.num_hidden_layers) or -lm_loss_scorer(batches).fn(m),
                  higher_is_better=True, lengths=frozenset({3}))
    table = scan(model, [2, 3], [lm_loss_scorer(batches), task], layer_influence=estimate_importance(model, batches).layers)
    scored = table.dropna(subset=["task"])
    assert set(scored.block_len) == {3} and len(scored) == len(calls) == 4 + 2  # 4 blocks, 2 non-contiguous
    assert table[table.block_len != 3].task.isna().all() and table.lm_loss.notna().all()
    assert best_block(table, 3, task) == best_block(table, 3, lm_loss_scorer(batches))  # task = -loss here
    plot_scan(table, [lm_loss_scorer(batches), task], tmp_path / "scan.png")
    assert (tmp_path / "scan.png").stat().st_size > 10_000


def test_parse_layers():
    assert parse_layers("16-31", 32) == list(range(16, 32))
    assert parse_layers("3,5,7-8", 32) == [3, 5, 7, 8]
    for bad, message in [("30-40", "must lie in 0..31"), ("a-b", "expected START-END"), ("0-31", "removes all")]:
        with pytest.raises(ValueError, match=message):
            parse_layers(bad, 32)
