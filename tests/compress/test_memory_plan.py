"""The training memory plan (compress/memory_plan.py) against what autograd really keeps, and the dry run's use
of it: the paper's recipes fit 8 x 80 GB, a plan that does not fit is refused with a micro-batch that does."""

import dataclasses

import pytest
import torch
from minitron.compress.memory_plan import (
    MEASURED_FAMILIES,
    activation_bytes,
    check_fits,
    fitting_micro_batch,
    plan_training,
)
from minitron.compress.train import enable_checkpointing
from minitron.compress.train_config import TrainConfig
from minitron.core.errors import BadInput

from tests.conftest import tiny_config


def saved_bytes(config, tokens: int, bf16: bool, checkpointing: bool = False) -> int:
    """Bytes of the distinct tensors autograd saves in one training forward of the decoder (weights excluded)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa").train()
    if checkpointing:
        enable_checkpointing(model)
    storages: dict[int, int] = {}

    def keep(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model.model(input_ids=ids, use_cache=False)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in weights)


def measured_per_token_layer(family: str, bf16: bool) -> float:
    """Saved bytes per token per decoder layer: the difference of 1 and 2 layers at two lengths, so what does not
    grow with tokens (bf16 weight copies, rotary tables) cancels."""
    def at(layers, tokens):
        return saved_bytes(tiny_config(family, hidden=128, heads=4, kv_heads=2, head_dim=32, ffn=256, layers=layers),
                           tokens, bf16)

    short, long = 64, 128
    return ((at(2, long) - at(1, long)) - (at(2, short) - at(1, short))) / (long - short)


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp32"])
@pytest.mark.parametrize("family", MEASURED_FAMILIES)
def test_activation_bytes_match_what_autograd_saves(family, bf16):
    config = tiny_config(family, hidden=128, heads=4, kv_heads=2, head_dim=32, ffn=256)
    planned, measured = activation_bytes(config, bf16), measured_per_token_layer(family, bf16)
    assert planned == pytest.approx(measured, rel=0.1), f"planned {planned:.0f}, measured {measured:.0f} B/token/layer"


def test_checkpointing_keeps_only_each_layers_input():
    config = tiny_config("llama", hidden=128, heads=4, kv_heads=2, head_dim=32, ffn=256, layers=1)
    deeper = tiny_config("llama", hidden=128, heads=4, kv_heads=2, head_dim=32, ffn=256, layers=3)
    per_layer = (saved_bytes(deeper, 128, True, checkpointing=True)
                 - saved_bytes(config, 128, True, checkpointing=True)) / 2 / 128
    assert per_layer == pytest.approx(4 * 128, rel=0.1)  # the fp32 residual entering the layer


TABLE_4 = TrainConfig(seq_len=8192, global_batch=1152, micro_batch=1, precision="bf16", steps=9961)


@pytest.fixture(scope="module")
def llama_8b():
    from transformers import AutoConfig

    from tests.minitron.test_recipes import RECIPES

    return AutoConfig.from_pretrained(RECIPES / "configs" / "llama-3.1-8b.json")


def test_the_plan_counts_sharded_state_and_grows_with_the_micro_batch(llama_8b):
    one, eight = plan_training(llama_8b, None, TABLE_4, gpus=1), plan_training(llama_8b, None, TABLE_4, gpus=8)
    assert one.parts["weights"] == pytest.approx(4 * 8.03e9, rel=0.01)  # fp32 master weights of Llama-3.1-8B
    assert eight.parts["optimizer"] == pytest.approx(one.parts["optimizer"] / 8)
    assert one.parts["unsharded"] == 0 < eight.parts["unsharded"]
    totals = [plan_training(llama_8b, None, dataclasses.replace(TABLE_4, micro_batch=m), gpus=8).total
              for m in (1, 2, 4)]
    assert totals == sorted(totals)
    assert plan_training(llama_8b, None, dataclasses.replace(TABLE_4, activation_checkpointing=True), gpus=8
                         ).parts["activations"] < eight.parts["activations"] / 5


def test_a_plan_over_the_gpu_is_refused_with_the_micro_batch_that_fits(llama_8b):
    cfg = dataclasses.replace(TABLE_4, seq_len=2048, micro_batch=8)
    gpu = 80e9
    plan = plan_training(llama_8b, None, cfg, gpus=8)
    assert plan.total > gpu
    fits = fitting_micro_batch(llama_8b, None, cfg, 8, gpu)
    assert fits is not None and fits < 8
    assert plan_training(llama_8b, None, dataclasses.replace(cfg, micro_batch=fits), gpus=8).total <= gpu
    with pytest.raises(BadInput, match=f"set micro_batch: {fits}"):
        check_fits(plan, llama_8b, None, cfg, gpu, "stage correct")
    with pytest.raises(BadInput, match="activation_checkpointing: true"):  # even one sequence of 8192 is too much
        check_fits(plan_training(llama_8b, None, TABLE_4, gpus=8), llama_8b, None, TABLE_4, gpu, "stage correct")
    with pytest.raises(BadInput, match="multiple of processes"):  # 1152 sequences do not split over 256 GPUs
        plan_training(llama_8b, None, TABLE_4, gpus=256)


def test_the_paper_recipes_dry_run_fits_8_h100s_and_names_the_fix_when_not(tmp_path, caplog):
    import logging

    from minitron import pipeline
    from tests.minitron.test_recipes import RECIPES

    caplog.set_level(logging.INFO, logger="minitron")
    pipeline.run(RECIPES / "llama-3.1-minitron-4b-depth.yaml", tmp_path, dry_run=True)
    lines = [r.getMessage() for r in caplog.records if "GB per GPU" in r.getMessage()]
    assert len(lines) == 2 and all("(fits)" in line for line in lines), lines  # correct and distill
    text = (RECIPES / "llama-3.1-minitron-4b-depth.yaml").read_text()
    without = tmp_path / "without-checkpointing.yaml"
    without.write_text(text.replace("activation_checkpointing: true", "activation_checkpointing: false"))
    (tmp_path / "configs").symlink_to(RECIPES / "configs")
    with pytest.raises(BadInput, match="stage correct .*set activation_checkpointing: true"):
        pipeline.run(without, tmp_path, dry_run=True)
    with pytest.raises(BadInput, match="--dry-run"):
        pipeline.run(without, tmp_path, gpus=8)


@pytest.mark.parametrize("name", ["llama-3.1-minitron-4b-width", "llama-3.1-minitron-4b-depth", "mn-minitron-8b"])
def test_every_paper_recipe_fits_its_own_cluster(name, tmp_path):
    from minitron import pipeline
    from minitron.recipe import load_recipe
    from tests.minitron.test_recipes import RECIPES

    assert load_recipe(RECIPES / f"{name}.yaml").cluster, "a GPU recipe names the GPUs its plan is made for"
    pipeline.run(RECIPES / f"{name}.yaml", tmp_path, dry_run=True)  # raises when a stage does not fit
