"""FP8 quantization on the CPU and deployment folders: the export, its accuracy, the engine settings and
commands against TensorRT-LLM's and vLLM's documented flags, and bad input."""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FAMILIES, MOE_FAMILIES, stdlib_texts, tiny_model
from minitron.core.model_io import save_checkpoint
from safetensors.torch import load_file

from minitron import cli

pytest.importorskip("modelopt")
DOCUMENTED = json.loads((Path(__file__).parents[1] / "data" / "trtllm_documented_flags.json").read_text())


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("deploy")
    save_checkpoint(tiny_model("llama", layers=2), tokenizer, root / "model")
    (root / "calib.txt").write_text("\n\n".join(stdlib_texts(4)))
    import os

    os.environ["MINITRON_CACHE"] = str(root / "cache")
    assert cli.main(["quantize", "--model", str(root / "model"), "--calib", str(root / "calib.txt"), "--out",
                          str(root / "fp8"), "--kv-cache", "fp8", "--seq-len", "32", "--num-samples", "16",
                          "--dtype", "float32", "--eval-blocks", "8"]) == 0
    return root


def test_export_is_fp8_with_scales_within_the_bound(quantized):
    fp8 = quantized / "fp8"
    quant = json.loads((fp8 / "hf_quant_config.json").read_text())["quantization"]
    assert quant["quant_algo"] == "FP8" and quant["kv_cache_quant_algo"] == "FP8"
    tensors = load_file(fp8 / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    assert tensors[name].dtype == torch.float8_e4m3fn and tensors[name + "_scale"].dtype == torch.float32
    assert "model.layers.0.mlp.down_proj.input_scale" in tensors
    record = json.loads((fp8 / "minitron.json").read_text())
    assert record["export_check"]["fp8_tensors_checked"] == 14  # 7 projections x 2 layers
    assert 0 < record["export_check"]["max_error_over_fp8_bound"] <= 1.0
    accuracy = record["accuracy"]
    print(f"FP8 fake-quant LM loss {accuracy['lm_loss_reference']:.4f} -> {accuracy['lm_loss_fp8']:.4f}, "
          f"token KL {accuracy['token_kl']:.5f}")
    assert abs(accuracy["lm_loss_delta"]) < 0.05 and 0 < accuracy["token_kl"] < 0.05
    assert (fp8 / "tokenizer.json").exists()


def documented_trtllm_flags() -> set[str]:
    bench = DOCUMENTED["trtllm-bench"]
    return (set(DOCUMENTED["trtllm-serve"]) | set(bench["global"]) | set(bench["prepare-dataset"])
            | set(bench["token-norm-dist"]) | set(bench["throughput"]))


def flags(command: str) -> set[str]:
    return set(re.findall(r"(?<!\S)(--[\w-]+)", command))


def test_trtllm_deployment_uses_only_documented_flags(quantized, capsys):
    out = quantized / "trtllm"
    assert cli.main(["deploy", "--checkpoint", str(quantized / "fp8"), "--backend", "trtllm", "--out", str(out),
                          "--dry-run"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"] == "fp8" and manifest["kv_cache_dtype"] == "fp8"
    assert manifest["max_batch_size"] == 64  # the paper's batch for small models
    assert manifest["built"] == "nothing: dry run" and manifest["smoke_test"] == "not run: dry run"
    assert manifest["fp8_accuracy"]["token_kl"] > 0 and len(manifest["weights_sha256"]["model.safetensors"]) == 64
    assert manifest["target_engine_version"].startswith(f"tensorrt-llm {DOCUMENTED['tensorrt_llm_version'][:3]}")
    options = yaml.safe_load((out / "extra_llm_api_options.yaml").read_text())
    api = DOCUMENTED["llm_api"]
    assert set(options) <= set(api["top_level"])
    assert set(options["kv_cache_config"]) <= set(api["kv_cache_config"])
    assert set(options["cuda_graph_config"]) <= set(api["cuda_graph_config"])
    assert options["kv_cache_config"]["dtype"] == "fp8" and options["cuda_graph_config"]["enable_padding"] is True
    allowed = documented_trtllm_flags()
    for name, command in manifest["commands"].items():
        assert flags(command) <= allowed, (name, flags(command) - allowed)
    printed = capsys.readouterr().out
    assert "trtllm-serve" in printed and "--extra_llm_api_options" in printed
    assert (out / "checkpoint" / "hf_quant_config.json").exists() and (out / "commands.sh").exists()


def test_tensorrt_engine_options_fit_the_engine_backend(quantized):
    from minitron.deploy.deploy import checkpoint_facts, commands, size_deployment, trtllm_options

    facts = checkpoint_facts(quantized / "fp8")
    sizing = size_deployment(facts)
    options = trtllm_options(facts, sizing, engine="tensorrt")
    api = DOCUMENTED["llm_api"]
    assert set(options) <= set(api["top_level_tensorrt_backend"]) and "cuda_graph_config" not in options
    assert set(options["kv_cache_config"]) <= set(api["kv_cache_config"]) and "dtype" not in options["kv_cache_config"]
    cmds = commands("trtllm", quantized / "engine-deploy", facts, sizing, engine="tensorrt")
    allowed = documented_trtllm_flags() | set(DOCUMENTED["trtllm-build"])
    assert all(flags(c) <= allowed | {"--checkpoint", "--backend", "--engine", "--out"} for c in cmds.values())
    assert "--engine_dir" in cmds["bench_throughput"] and "--max_seq_len" not in cmds["bench_throughput"]


def test_vllm_deployment_uses_only_documented_flags(quantized):
    out = quantized / "vllm"
    assert cli.main(["deploy", "--checkpoint", str(quantized / "fp8"), "--backend", "vllm", "--out", str(out),
                          "--dry-run"]) == 0
    commands = json.loads((out / "manifest.json").read_text())["commands"]
    assert flags(commands["serve"]) <= set(DOCUMENTED["vllm serve"])
    assert flags(commands["bench"]) <= set(DOCUMENTED["vllm bench throughput"])
    assert "--quantization modelopt" in commands["serve"] and "--kv-cache-dtype fp8" in commands["serve"]


def test_deploy_without_the_engine_says_what_to_install(quantized, capsys):
    out = quantized / "nothing"
    assert cli.main(["deploy", "--checkpoint", str(quantized / "fp8"), "--backend", "trtllm", "--out",
                          str(out)]) == 2
    assert "TensorRT-LLM is not installed" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("args,message", [
    (["--max-batch-size", "100000000", "--max-seq-len", "256"], "KV cache"),
    (["--engine", "onnx"], "--engine tensorrt is the only engine option"),
    (["--backend", "sglang"], "--backend 'sglang' is unknown"),
])
def test_bad_deploy_input(quantized, capsys, args, message):
    out = quantized / "bad"
    base = ["deploy", "--checkpoint", str(quantized / "fp8"), "--out", str(out), "--dry-run"]
    if "--backend" not in args:
        base += ["--backend", "trtllm"]
    assert cli.main(base + args) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_quantize_refuses_bad_input(quantized, tmp_path, capsys):
    from transformers import AutoConfig

    AutoConfig.for_model("bert", num_hidden_layers=1, hidden_size=8, num_attention_heads=2).save_pretrained(tmp_path / "bert")
    base = ["quantize", "--calib", str(quantized / "calib.txt"), "--out", str(tmp_path / "q")]
    cases = [
        (["--model", str(tmp_path / "bert")], "supported: LlamaForCausalLM"),
        (["--model", str(quantized / "fp8")], "quantized checkpoint"),
        (["--model", str(quantized / "model"), "--calib", str(tmp_path / "none.txt")], "no such file"),
        (["--model", str(quantized / "model"), "--kv-cache", "int4"], "--kv-cache must be"),
        (["--model", str(quantized / "model"), "--seq-len", "100000"], "exceeds the model's"),
    ]
    for extra, message in cases:
        assert cli.main(base + extra) == 2, extra
        assert message in capsys.readouterr().err
        assert not (tmp_path / "q").exists()


def test_real_fp8_gemms_match_fake_quantization():
    """The GPU check's comparison, on the CPU (torch has FP8 _scaled_mm there too): each exported FP8 layer run
    as a real FP8 GEMM reproduces the fake-quantized layer to within rounding."""
    from minitron.deploy.gpu_check import compare_fp8

    model = tiny_model("llama", hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128).to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 384, (2, 32), generator=generator)
    calib = [torch.randint(3, 384, (4, 32), generator=generator) for _ in range(2)]
    figures = compare_fp8(model, ids, calib)
    assert figures["fp8_linears"] == 28
    # real FP8 GEMMs compute the fake quantizer's function: they differ from it by far less than FP8 differs from
    # BF16 (0.5% vs 3.5% of a layer's output with transformers 5; 1.8% vs 3.5% with 4.57, in its first layer)
    assert figures["per_layer_rel_diff_real_vs_fake"] < 0.6 * figures["per_layer_rel_diff_bf16_vs_fake"]


@pytest.mark.parametrize("family", [f for f in FAMILIES + MOE_FAMILIES if f != "llama"])  # llama: the fixture
def test_every_family_exports_fp8_and_names_unconfirmed_engines(family, tokenizer, tmp_path, monkeypatch):
    """ModelOpt's export is generic (no per-architecture list), so every family exports here; whether an engine
    serves it is the engines' business, and a deployment says where that is unconfirmed."""
    from minitron.core.families import check_supported
    from minitron.deploy.deploy import deploy
    from minitron.deploy.quantize import quantize

    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    model = tiny_model(family, layers=2)
    save_checkpoint(model, tokenizer, tmp_path / "model")
    (tmp_path / "calib.txt").write_text("\n\n".join(stdlib_texts(4)))
    record = quantize(str(tmp_path / "model"), str(tmp_path / "calib.txt"), tmp_path / "fp8", seq_len=32,
                      num_samples=4, dtype="float32", eval_blocks=4)
    assert record["export_check"]["fp8_tensors_checked"] > 0 and record["export_check"]["max_error_over_fp8_bound"] <= 1
    caveats = check_supported(model.config).engine_caveats
    assert (record["engine_caveat"] is None) == ("modelopt" not in caveats)
    manifest = deploy(tmp_path / "fp8", "trtllm", tmp_path / "deploy", dry_run=True)
    assert (manifest["engine_caveat"] is None) == ("trtllm" not in caveats)
