"""The `minitron` command end to end on a tiny checkpoint: outputs, records, and bad input that writes nothing."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import stdlib_texts, tiny_model
from minitron.core.model_io import save_checkpoint
from transformers import AutoConfig, AutoModelForCausalLM

from minitron import cli


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("cli")
    save_checkpoint(tiny_model("qwen2", layers=5), tokenizer, root / "teacher")
    (root / "calib.txt").write_text("\n\n".join(stdlib_texts(4)))
    return root


def run(*args) -> int:
    return cli.main([str(a) for a in args])


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))


RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CALIB = ["--seq-len", 32, "--num-samples", 8, "--batch-size", 4]


def test_prune_width_writes_a_loadable_checkpoint_with_its_record(workspace, tmp_path):
    out = tmp_path / "width"
    assert run("prune", "width", "--model", workspace / "teacher", "--calib", workspace / "calib.txt", "--out", out,
               "--hidden-size", 36, "--ffn-hidden-size", 64, "--num-heads", 4, *CALIB) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert (model.config.hidden_size, model.config.intermediate_size, model.config.num_attention_heads) == (36, 64, 4)
    record = json.loads((out / "minitron.json").read_text())
    assert record["stage"] == "prune-width" and record["importance"]["num_samples"] == 8
    assert record["params"]["target"]["params"] == sum(p.numel() for p in model.parameters())
    assert record["provenance"]["torch"] == torch.__version__
    # the saved scores serve a second target without --calib
    again = tmp_path / "width2"
    assert run("prune", "width", "--model", workspace / "teacher", "--out", again, "--hidden-size", 24,
               "--importance", out / "importance.safetensors") == 0
    assert AutoConfig.from_pretrained(again).hidden_size == 24


def test_random_ranking_needs_no_calibration_and_prunes_other_units(workspace, tmp_path):
    out = tmp_path / "random"
    assert run("prune", "width", "--model", workspace / "teacher", "--out", out, "--ffn-hidden-size", 48,
               "--ranking", "random", "--seed", 3) == 0
    record = json.loads((out / "minitron.json").read_text())
    assert record["importance"] == {"random": True, "seed": 3}
    assert AutoConfig.from_pretrained(out).intermediate_size == 48


def test_prune_depth_scans_plots_and_drops(workspace, tmp_path):
    out = tmp_path / "depth"
    assert run("prune", "depth", "--model", workspace / "teacher", "--calib", workspace / "calib.txt", "--out", out,
               "--num-layers", 3, "--scan-lengths", 1, *CALIB) == 0
    record = json.loads((out / "minitron.json").read_text())
    dropped = record["dropped_layers"]
    assert len(dropped) == 2 and dropped[1] == dropped[0] + 1
    assert (out / "depth_scan.png").exists() and "contiguous" in (out / "depth_scan.csv").read_text()
    assert AutoConfig.from_pretrained(out).num_hidden_layers == 3


def test_prune_scan_writes_the_scan_and_no_model(workspace, tmp_path):
    out = tmp_path / "scan"
    assert run("prune", "scan", "--model", workspace / "teacher", "--calib", workspace / "calib.txt", "--out", out,
               "--num-layers", 3, "--scan-lengths", 1, *CALIB) == 0
    table = pd.read_csv(out / "depth_scan.csv")
    assert set(table.block_len) == {1, 2} and (out / "depth_scan.png").exists()
    assert json.loads((out / "minitron.json").read_text())["stage"] == "scan-depth"
    assert not list(out.glob("*.safetensors"))


@pytest.mark.parametrize("args,message", [
    (["prune", "scan", "--num-layers", 7], "must lie in 1..4"),
    (["prune", "scan", "--num-layers", 3, "--metric", "bleu"], "--metric 'bleu' is unknown"),
    (["prune", "width", "--hidden-size", 64], "out of range"),
    (["prune", "width", "--num-heads", 5], "does not split evenly"),
    (["prune", "width", "--hidden-size", 24, "--seq-len", 4096], "--seq-len 4096 is out of range"),
    (["prune", "depth", "--num-layers", 3, "--drop", "1-2"], "exactly one of"),
    (["prune", "depth", "--num-layers", 7], "must lie in 1..4"),
    (["prune", "depth", "--num-layers", 3, "--metric", "bleu"], "--metric 'bleu' is unknown"),
])
def test_bad_targets_fail_before_work_and_write_nothing(workspace, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert run(*args, "--model", workspace / "teacher", "--calib", workspace / "calib.txt", "--out", out) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob(".out*")) == []


def test_bad_data_and_models_are_refused(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["prune", "width", "--hidden-size", 24, "--out", out]
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("x = 1")
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    AutoConfig.for_model("gpt2", n_layer=1, n_embd=8, n_head=2).save_pretrained(gpt2)
    cases = [
        (["--model", workspace / "teacher", "--calib", tmp_path / "empty.txt"], "empty"),
        (["--model", workspace / "teacher", "--calib", tmp_path / "short.txt", "--seq-len", 64], "fewer than one block"),
        (["--model", workspace / "teacher", "--calib", tmp_path / "missing.txt"], "no such file"),
        (["--model", gpt2, "--calib", workspace / "calib.txt"], "supported: LlamaForCausalLM, MistralForCausalLM"),
        (["--model", workspace / "calib.txt", "--calib", workspace / "calib.txt"], "no config.json"),
    ]
    for extra, message in cases:
        assert run(*base, *extra) == 2, extra
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_existing_output_needs_overwrite(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    args = ["prune", "depth", "--model", workspace / "teacher", "--out", out, "--drop", "0-1"]
    assert run(*args) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert run(*args, "--overwrite") == 0
    assert not (out / "keep.txt").exists() and AutoConfig.from_pretrained(out).num_hidden_layers == 3


def test_arch_reproduces_the_papers_table_3(capsys):
    expected = {  # (total, non-embedding) in billions, Table 3 of the paper
        "llama-3.1-minitron-4b-width": (4.51, 3.72), "llama-3.1-minitron-4b-depth": (4.54, 3.49),
        "mn-minitron-8b": (8.41, 7.34),
    }
    for name, (total, non_emb) in expected.items():
        assert run("arch", "--recipe", RECIPES / f"{name}.yaml", "--json") == 0
        target = json.loads(capsys.readouterr().out)["target"]
        assert round(target["params"] / 1e9, 2) == total and round(target["non_embedding_params"] / 1e9, 2) == non_emb
    assert run("arch", "--config", RECIPES / "configs/llama-3.1-8b.json", "--json") == 0
    source = json.loads(capsys.readouterr().out)["source"]
    assert (source["params"], source["non_embedding_params"]) == (8_030_261_248, 6_979_588_096)


@pytest.mark.parametrize("config,total,non_embedding,active", [
    ("qwen3-8b", 8.2, 6.95, None),  # Qwen3-8B model card: 8.2B, 6.95B non-embedding
    ("gemma-2-9b", 9.24, 8.32, None),  # Gemma 2 paper, Table 2: 917,962,752 embedding + 8,324,201,984 other
    ("phi-3-mini-4k-instruct", 3.8, None, None),  # Phi-3 report: 3.8B
    ("mixtral-8x7b-v0.1", 46.7, None, 12.9),  # Mistral's Mixtral announcement: 46.7B total, 12.9B per token
    ("qwen3-30b-a3b", 30.5, 29.9, 3.3),  # Qwen3-30B-A3B model card: 30.5B, 29.9B non-embedding, 3.3B activated
])
def test_arch_counts_other_families_as_published(capsys, config, total, non_embedding, active):
    assert run("arch", "--config", RECIPES / f"configs/{config}.json", "--json") == 0
    source = json.loads(capsys.readouterr().out)["source"]

    def agrees(count, published):  # within 2%: Qwen prints the 3.353B active parameters counted here as 3.3B
        return published is None or source[count] / 1e9 == pytest.approx(published, rel=0.02)

    assert agrees("params", total) and agrees("non_embedding_params", non_embedding) and agrees("active_params", active)
    assert ("active_params" in source) == (active is not None)
