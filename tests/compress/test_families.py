"""Every family through the CPU path as a user runs it, from checkpoint folders: importance and width pruning,
a depth scan, distillation, and a student that reloads and generates. Parity per family (keep-all, masking,
KV cache) is in test_width.py and test_depth.py; FP8 export per family in tests/deploy."""

import json

import pytest
import torch
from conftest import FAMILIES, MOE_FAMILIES, stdlib_texts, tiny_model
from minitron.compress.prune import prune_depth, prune_width
from minitron.compress.train import fit
from minitron.compress.train_config import TrainConfig
from minitron.core.arch import Dims, WidthTarget
from minitron.core.families import FAMILIES as SUPPORTED
from minitron.core.families import UnsupportedModelError, check_supported
from minitron.core.model_io import save_checkpoint
from transformers import AutoConfig, AutoModelForCausalLM


@pytest.mark.parametrize("family", [f for f in FAMILIES + MOE_FAMILIES if f != "llama"])  # llama: everywhere
def test_prune_scan_and_distill_every_family(family, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data.txt").write_text("\n\n".join(stdlib_texts(4)))
    data, teacher = str(tmp_path / "data.txt"), tmp_path / "teacher"
    save_checkpoint(tiny_model(family), tokenizer, teacher)
    moe = family in MOE_FAMILIES  # and 24 channels: its expert GEMMs want multiples of 8
    width = prune_width(str(teacher), tmp_path / "width", WidthTarget(24 if moe else 36, 64, 3, 1, 3 if moe else None),
                        calib=data, num_samples=4, seq_len=32, batch_size=2)
    depth = prune_depth(str(teacher), tmp_path / "depth", calib=data, num_layers=3, num_samples=4, seq_len=32,
                        batch_size=2)
    assert json.loads((depth / "minitron.json").read_text())["dropped_layers"]
    cfg = TrainConfig(steps=2, seq_len=32, global_batch=2, micro_batch=2, lr=1e-3, min_lr=1e-4, warmup=1,
                      eval_every=2, eval_batches=1, save_every=2, chunk_size=16)
    records = fit(str(width), data, tmp_path / "distilled", cfg, teacher_dir=str(teacher))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if r["split"] == "train")
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "distilled").eval()
    assert (student.config.hidden_size, Dims.of(student.config).ffn) == (24 if moe else 36, 64)
    prompt = tokenizer("def parse(text):", return_tensors="pt").input_ids
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(student.generate(prompt, use_cache=True, **kw), student.generate(prompt, use_cache=False, **kw))


def test_an_unsupported_family_is_refused_with_the_supported_list():
    config = AutoConfig.for_model("gpt2")
    config.architectures = ["GPT2LMHeadModel"]
    with pytest.raises(UnsupportedModelError) as refused:
        check_supported(config)
    assert "GPT2LMHeadModel" in str(refused.value) and all(arch in str(refused.value) for arch in SUPPORTED)
