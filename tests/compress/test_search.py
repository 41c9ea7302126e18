"""`minitron search`: candidates fit the budget and use most of it, each is cut from one importance estimate and
scored on held-out blocks, and the winner written is the candidate that scored best."""

import json

import pandas as pd
import pytest
from conftest import stdlib_texts, tiny_config, tiny_model
from minitron.compress.data import load_blocks
from minitron.compress.search import Budget, enumerate_candidates, parse_count, parse_reference, search
from minitron.core.arch import count_params
from minitron.core.errors import BadInput
from minitron.core.measure import lm_loss
from minitron.core.model_io import save_checkpoint
from minitron.core.precision import autocast
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_counts_and_references_parse():
    assert parse_count("79.7M") == pytest.approx(79.7e6) and parse_count("4.5B") == 4.5e9
    assert parse_count("0.7") == 0.7 and parse_count(95_000_000) == 95e6
    with pytest.raises(BadInput, match="not a parameter count"):
        parse_count("lots")
    target, layers = parse_reference("hidden=36,ffn=64,layers=3")
    assert (target.hidden_size, target.intermediate_size, layers) == (36, 64, 3)
    with pytest.raises(BadInput, match="expected comma-separated key=N"):
        parse_reference("hidden=36,width=2")


def test_candidates_fit_the_budget_and_use_most_of_it():
    config = tiny_config("llama", hidden=96, heads=6, kv_heads=2, head_dim=16, ffn=256, layers=6)
    budget = Budget(params=0.6)
    candidates, teacher = enumerate_candidates(config, budget, steps=6, fill=0.85)
    limit = 0.6 * teacher["params"]
    assert candidates and all(0.85 * limit <= c.costs["params"] <= limit for c in candidates)
    assert all(c.target.num_attention_heads == 6 and c.layers == 6 for c in candidates)  # the paper's defaults
    assert all(c.target.hidden_size % 6 == 0 and c.target.intermediate_size % 32 == 0 for c in candidates)
    some = candidates[0]
    derived_params = some.costs["params"]
    assert derived_params == count_params(config.__class__.from_dict(
        {**config.to_dict(), "hidden_size": some.target.hidden_size,
         "intermediate_size": some.target.intermediate_size}))["params"]
    deeper, _ = enumerate_candidates(config, budget, axes=("hidden", "ffn", "layers"), steps=6, fill=0.85)
    assert any(c.layers < 6 for c in deeper) and len(deeper) > len(candidates)


def test_memory_and_latency_budgets_bound_what_they_name():
    config = tiny_config("llama", hidden=96, heads=6, kv_heads=2, head_dim=16, ffn=256, layers=6)
    budget = Budget(memory_gb=1e-3, latency=0.7, context=64, batch=4)
    candidates, teacher = enumerate_candidates(config, budget, axes=("hidden", "ffn", "layers"), steps=6, fill=0.5)
    assert all(c.costs["memory_gb"] <= 1e-3 and c.costs["latency"] <= 0.7 for c in candidates)
    # memory by hand: bf16 weights and a KV cache of 4 x 64 tokens, 2 x layers x kv_heads x head_dim values each
    c = candidates[0]
    expected = (c.costs["params"] * 2 + 4 * 64 * 2 * c.layers * 2 * 16 * 2) / 1e9
    assert c.costs["memory_gb"] == pytest.approx(expected)
    assert teacher["latency"] == 1.0


def test_experts_budget_counts_active_parameters():
    config = tiny_config("mixtral", hidden=96, heads=6, kv_heads=2, head_dim=16, ffn=64, layers=2)
    candidates, teacher = enumerate_candidates(config, Budget(active_params=0.8), axes=("hidden", "ffn", "experts"),
                                               steps=4, fill=0.8)
    assert all(c.costs["active_params"] <= 0.8 * teacher["active_params"] for c in candidates)
    assert all(c.target.num_experts >= 2 and c.target.hidden_size % 8 == 0 for c in candidates)


@pytest.mark.parametrize("kwargs,message", [
    ({"budget": Budget()}, "no budget given"),
    ({"budget": Budget(params=0.7), "axes": ("hidden", "width")}, "unknown axes width"),
    ({"budget": Budget(params=0.7), "axes": ("experts",)}, "needs a mixture-of-experts model"),
    ({"budget": Budget(params=100)}, "no architecture on the axes hidden, ffn fits the budget"),
    ({"budget": Budget(active_params=0.5)}, "this one is dense"),
])
def test_impossible_searches_are_refused_with_the_fix(kwargs, message):
    with pytest.raises(BadInput, match=message):
        enumerate_candidates(tiny_config("llama"), **kwargs)


def test_search_writes_the_best_candidate_and_compares_the_reference(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data.txt").write_text("\n\n".join(stdlib_texts(8)))
    save_checkpoint(tiny_model("llama", hidden=96, heads=6, kv_heads=2, head_dim=16, ffn=256), tokenizer,
                    tmp_path / "teacher")
    record = search(str(tmp_path / "teacher"), str(tmp_path / "data.txt"), tmp_path / "out", Budget(params=0.7),
                    steps=8, fill=0.8, reference="hidden=72,ffn=160", num_samples=8, eval_blocks=8, seq_len=32,
                    batch_size=4, distill_top=1, distill_tokens=256, distill={"lr": 1e-3, "min_lr": 1e-4})
    table = pd.read_csv(tmp_path / "out" / "candidates.csv")
    plain = table[~table.reference]
    assert len(plain) == record["candidates"] > 1 and (tmp_path / "out" / "candidates.png").is_file()
    assert plain.iloc[0].label == record["winner"]["label"] and plain.distilled_loss.notna().sum() == 1
    # the best by loss right after pruning was distilled and leads; the rest follow by that loss
    assert plain.loss.iloc[0] == plain.loss.min() and plain.loss.iloc[1:].is_monotonic_increasing
    assert table[table.reference].label.tolist() == ["h72 f160 q6 L4"]
    versus = record["versus_reference"]  # the reference was distilled too, and compared after it
    assert versus["reference_loss"] == pytest.approx(table[table.reference].loss.iloc[0])
    assert {"after_pruning", "after_distillation"} <= set(versus)
    assert table[table.reference].distilled_loss.notna().all()
    # the written winner is the candidate that was scored: its held-out loss reproduces the table's
    winner = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    held_out = list(load_blocks(str(tmp_path / "data.txt"), AutoTokenizer.from_pretrained(tmp_path / "teacher"), 32)
                    .val.take(8).batches(4))
    with autocast("cpu", "auto"):  # as the search scored it
        assert lm_loss(winner, held_out) == pytest.approx(record["winner"]["loss"], abs=1e-3)
    assert json.loads((tmp_path / "out" / "minitron.json").read_text())["stage"] == "search"


def test_heads_and_kv_groups_can_be_searched():
    config = tiny_config("llama", hidden=96, heads=6, kv_heads=2, head_dim=16, ffn=256, layers=6)
    candidates, _ = enumerate_candidates(config, Budget(params=0.8), axes=("hidden", "ffn", "heads", "kv_heads"),
                                         steps=4, fill=0.7)
    shapes = {(c.target.num_attention_heads, c.target.num_key_value_heads) for c in candidates}
    assert (3, 1) in shapes and (6, 2) in shapes  # one KV group of three heads, and the teacher's grouping
    assert all(h % kv == 0 and h // kv <= 3 for h, kv in shapes)


def test_a_task_ranks_the_candidates_when_given(tokenizer, tmp_path, monkeypatch):
    """A stand-in task that prefers fewer parameters puts the smallest candidate first, whatever its loss."""
    from minitron.core.measure import Scorer

    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data.txt").write_text("\n\n".join(stdlib_texts(8)))
    save_checkpoint(tiny_model("llama", hidden=96, heads=6, kv_heads=2, head_dim=16, ffn=256), tokenizer,
                    tmp_path / "teacher")

    def smaller_is_better(**_context):
        return Scorer("smallness", lambda model: -sum(p.numel() for p in model.parameters()), higher_is_better=True)

    search(str(tmp_path / "teacher"), str(tmp_path / "data.txt"), tmp_path / "out", Budget(params=0.7), steps=8,
           fill=0.8, num_samples=8, eval_blocks=4, seq_len=32, batch_size=4, metric="smallness",
           metric_scorer=smaller_is_better)
    table = pd.read_csv(tmp_path / "out" / "candidates.csv")
    assert table.params.iloc[0] == table.params.min() and table.task.is_monotonic_decreasing
    with pytest.raises(BadInput, match="needs its scorer"):
        search(str(tmp_path / "teacher"), str(tmp_path / "data.txt"), tmp_path / "other", Budget(params=0.7),
               metric="winogrande")
