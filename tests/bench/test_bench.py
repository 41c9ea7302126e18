"""bench/ without engines: workload, records and resume, ideal speedups, model folders, reports from records."""

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_model
from minitron.bench import records, report, target, workload
from minitron.core.cost import token_cost
from minitron.core.model_io import save_checkpoint

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("bench-ckpt")
    save_checkpoint(tiny_model(layers=4), tokenizer, root / "teacher")
    fp8 = tiny_model(layers=4)
    fp8.config.quantization_config = {"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}
    save_checkpoint(fp8, tokenizer, root / "fp8")
    deploy = root / "deploy"
    save_checkpoint(tiny_model(layers=4), tokenizer, deploy / "checkpoint")
    (deploy / "manifest.json").write_text(json.dumps({"backend": "trtllm", "quantization": "fp8",
                                                      "kv_cache_dtype": "bf16", "max_seq_len": 128}))
    return root


# --- workload ---

def test_grid_parses_in_order_and_rejects_nonsense():
    assert workload.parse_grid("128/128, 2048/128,128/128") == [(128, 128), (2048, 128)]
    assert len(workload.parse_grid(workload.DEFAULT_GRID)) == 6
    for bad in ("128", "128/x", "0/5", "128-128"):
        with pytest.raises(ValueError, match="ISL/OSL pairs"):
            workload.parse_grid(bad)


def test_requests_have_exact_lengths_no_special_tokens_and_depend_only_on_seed_and_isl(tokenizer):
    ids = workload.allowed_ids(tokenizer, 384)
    assert not set(ids) & set(tokenizer.all_special_ids) and max(ids) < 384
    reqs = workload.make_requests(ids, isl=24, num_requests=5, seed=7)
    assert [len(r) for r in reqs] == [24] * 5 and len({tuple(r) for r in reqs}) == 5
    assert reqs == workload.make_requests(ids, isl=24, num_requests=5, seed=7)
    assert reqs != workload.make_requests(ids, isl=24, num_requests=5, seed=8)
    assert workload.allowed_ids(tokenizer, 100) == [i for i in ids if i < 100]  # a model vocab smaller than len(tok)


def test_points_beyond_the_positions_are_refused_naming_the_fix():
    workload.check_fits(100, 28, 128, "m")
    with pytest.raises(ValueError, match=r"ISL\+OSL 100\+29 = 129 exceeds the 128 positions of m; drop 100/29"):
        workload.check_fits(100, 29, 128, "m")


def test_trtllm_dataset_is_prepare_dataset_format(tmp_path):
    path = workload.write_trtllm_dataset(tmp_path / "d.jsonl", [[5, 6, 7], [8, 9, 10]], osl=4)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == [{"task_id": 0, "input_ids": [5, 6, 7], "output_tokens": 4},
                     {"task_id": 1, "input_ids": [8, 9, 10], "output_tokens": 4}]


# --- records ---

def repeat(rps, isl=16.0, osl=8.0, ttft=None):
    return records.Repeat(rps, rps * 8, rps * 24, isl, osl, ttft_ms=ttft)


def test_summary_takes_median_min_max_and_the_median_repeats_latencies():
    fields = records.summarize([repeat(1.0, ttft={"p50": 1}), repeat(3.0, ttft={"p50": 3}),
                                repeat(2.0, ttft={"p50": 2})], 16, 8)
    assert (fields["requests_per_s"], fields["requests_per_s_min"], fields["requests_per_s_max"]) == (2.0, 1.0, 3.0)
    assert fields["output_tokens_per_s"] == 16.0 and fields["ttft_ms"] == {"p50": 2}
    assert fields["length_mismatch"] is False and len(fields["per_repeat"]) == 3
    assert records.summarize([repeat(1.0, isl=19.0)], 16, 8)["length_mismatch"] is True
    assert records.summarize([repeat(1.0, isl=None, osl=None)], 16, 8)["length_mismatch"] is None
    stats = records.latency_stats([1.0, 2.0, 3.0, 4.0])
    assert stats["mean"] == 2.5 and stats["p50"] == 2.5 and 3.9 < stats["p99"] <= 4.0


def test_append_survives_a_torn_last_line_and_resume_keys(tmp_path):
    path = tmp_path / "out" / records.RECORDS_NAME
    a = {"label": "a", "backend": "hf", "batch_size": 4, "isl": 16, "osl": 8, "schema": records.SCHEMA_VERSION}
    records.append_record(path, a)
    with open(path, "a") as f:
        f.write('{"label": "b", "backe')  # a write cut short by a crash
    assert records.read_records(path) == [a]
    records.append_record(path, {**a, "isl": 32})
    assert [r["isl"] for r in records.read_records(path)] == [16, 32]
    assert {records.record_key(r) for r in records.read_records(path)} == {("a", "hf", 4, 16, 8), ("a", "hf", 4, 32, 8)}
    path.write_text("not json\n" + json.dumps(a) + "\n")
    with pytest.raises(ValueError, match="records.jsonl:1 is not valid JSON"):
        records.read_records(path)


def test_load_results_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no records.jsonl there"):
        records.load_results([tmp_path])
    records.append_record(tmp_path / records.RECORDS_NAME, {"label": "a"})
    with pytest.raises(ValueError, match="lacks backend, batch_size"):
        records.load_results([tmp_path])


# --- ideal ---

ARCH = {"hidden": 64, "ffn": 128, "heads": 4, "kv_heads": 2, "head_dim": 16, "layers": 4, "vocab": 100,
        "tied": False, "params": 300_000, "non_embedding_params": 200_000}


def test_token_cost_by_hand():
    # ISL 2, OSL 3, batch 1, fp32: prefill 2 tokens + 2 decode steps
    cost = token_cost(ARCH, isl=2, osl=3, batch=1, weight_dtype="float32")
    decoder, head, attn = 200_000, 64 * 100, 4 * 4 * 4 * 16
    flops = 2 * decoder * 4 + 2 * head * 3 + attn * ((1 + 2) + (3 + 4))
    kv = 2 * 4 * 2 * 16 * 4
    moved = (decoder + head) * 4 * 3 + kv * (2 + 3 + 4)
    assert cost["flops"] == pytest.approx(flops / 3) and cost["bytes"] == pytest.approx(moved / 3)
    # FP8 halves the decoder weights' bytes against BF16 but keeps the lm_head and an unpinned KV cache in BF16
    bf16 = token_cost(ARCH, 2, 3, 1, "bfloat16")
    fp8 = token_cost(ARCH, 2, 3, 1, "fp8")
    assert bf16["bytes"] - fp8["bytes"] == pytest.approx(decoder * 3 / 3)
    assert fp8["flops"] == bf16["flops"]
    # a bigger batch shares the weights, not the KV cache
    assert token_cost(ARCH, 2, 3, 8, "bfloat16")["bytes"] < bf16["bytes"]
    with pytest.raises(ValueError, match="no byte size for the weight dtype 'int3'"):
        token_cost(ARCH, 2, 3, 1, "int3")


def test_the_papers_depth_and_width_models_have_the_ideal_speedups_of_figure_10():
    """Llama-3.1-8B (batch 32) against its 4B students (batch 64), FP8 weights and KV, over the default grid:
    the bytes ratio is near the paper's measured 2.7x (depth) and 1.8x (width), and above it, as an ideal is."""
    from minitron.core.arch import Dims, derive_config
    from transformers import LlamaConfig

    config = LlamaConfig(**json.loads((RECIPES / "configs/llama-3.1-8b.json").read_text()))
    teacher = target.arch_summary(config)
    depth = target.arch_summary(derive_config(config, keep_layers=list(range(16))))
    width = target.arch_summary(derive_config(config, dims=dataclasses.replace(Dims.of(config), hidden=3072,
                                                                                ffn=9216)))
    assert (teacher["params"], depth["params"], width["params"]) == (8_030_261_248, 4_540_469_248, 4_512_746_496)

    def average(student, key):
        grid = workload.parse_grid(workload.DEFAULT_GRID)
        return sum(token_cost(teacher, i, o, 32, "fp8", "fp8")[key]
                   / token_cost(student, i, o, 64, "fp8", "fp8")[key] for i, o in grid) / len(grid)

    assert 2.7 < average(depth, "bytes") < 3.0 and 1.8 < average(width, "bytes") < 2.2
    assert 1.85 < average(depth, "flops") < 2.0 and 1.7 < average(width, "flops") < 1.85


# --- model folders ---

def test_folders_resolve_per_backend_with_their_dtypes(checkpoints):
    hf = target.resolve("hf", str(checkpoints / "teacher"))
    assert (hf.kind, hf.label, hf.weight_dtype, hf.kv_cache_dtype, hf.max_positions) == (
        "checkpoint", "teacher", "float32", "float32", 256)
    assert hf.arch()["layers"] == 4 and hf.arch()["params"] == sum(p.numel() for p in tiny_model(layers=4).parameters())
    fp8 = target.resolve("vllm", str(checkpoints / "fp8"), label="student")
    assert (fp8.label, fp8.weight_dtype, fp8.kv_cache_dtype) == ("student", "fp8", "fp8")
    deploy = target.resolve("trtllm", str(checkpoints / "deploy"))
    assert (deploy.kind, deploy.weight_dtype, deploy.kv_cache_dtype, deploy.max_positions) == (
        "deploy", "fp8", "bfloat16", 128)
    served = target.resolve("openai", "http://127.0.0.1:9/v1", tokenizer=str(checkpoints / "deploy"))
    assert (served.url, served.checkpoint, served.label) == ("http://127.0.0.1:9/v1", checkpoints / "deploy/checkpoint",
                                                             "deploy")


@pytest.mark.parametrize("backend, model, error", [
    ("trtllm", "teacher", r"takes a deployment folder .* no manifest.json; make one with `minitron deploy"),
    ("hf", "deploy", "is a deployment folder; benchmark it with --backend trtllm or vllm"),
    ("hf", "fp8", "FP8 checkpoint, which transformers cannot run faithfully"),
    ("hf", "missing", "no such folder"),
    ("hf", ".", "neither an HF checkpoint"),
    ("openai", "teacher", "takes a server URL"),
    ("openai", "http://127.0.0.1:9/v1", "needs --tokenizer"),
    ("tgi", "teacher", "--backend 'tgi' is unknown"),
])
def test_wrong_kinds_of_model_are_refused_naming_what_is_expected(checkpoints, backend, model, error):
    given = model if model.startswith("http") else str(checkpoints / model)
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        target.resolve(backend, given)


# --- reports from records alone ---

def record(label, isl, osl, rps, batch=4, layers=4, hidden=64, dtype="bfloat16", backend="hf"):
    arch = {**ARCH, "layers": layers, "hidden": hidden}
    arch["non_embedding_params"] = 50_000 * layers * hidden // 64
    arch["params"] = arch["non_embedding_params"] + 2 * hidden * 100
    return {"label": label, "backend": backend, "isl": isl, "osl": osl, "batch_size": batch, "requests_per_s": rps,
            "requests_per_s_min": rps * 0.9, "requests_per_s_max": rps * 1.1, "output_tokens_per_s": rps * osl,
            "ttft_ms": {"mean": 5.0, "p50": 5.0}, "tpot_ms": None, "actual_isl": isl, "actual_osl": osl,
            "length_mismatch": False, "arch": arch, "dtype": dtype, "kv_cache_dtype": None}


def test_report_tables_and_figure_from_records(tmp_path):
    rows = [record("teacher", 16, 8, 10.0), record("teacher", 32, 16, 5.0),
            record("depth", 16, 8, 19.0, layers=2), record("depth", 32, 16, 11.0, layers=2),
            record("depth", 16, 8, 25.0, layers=2, batch=8),  # a bigger batch: the best one counts
            record("width", 16, 8, 14.0, hidden=48)]
    for r in rows:
        records.append_record(tmp_path / "runs" / records.RECORDS_NAME, r)
    summary = report.write_report([tmp_path / "runs"], tmp_path / "report")
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"figure10.png", "points.csv", "speedup.csv",
                                                                 "report.md"}
    by = summary.set_index("label")
    assert by.loc["depth", "vs"] == "teacher" and by.loc["depth", "kind"] == "depth"
    assert by.loc["depth", "avg_speedup"] == pytest.approx((2.5 + 2.2) / 2)
    assert by.loc["depth", "paper_speedup"] == 2.7 and by.loc["width", "paper_speedup"] == 1.8
    assert by.loc["width", "points"] == 1 and 1 < by.loc["depth", "avg_ideal_bytes"]
    points = pd.read_csv(tmp_path / "report" / "points.csv")
    assert len(points) == 5 and points.loc[points.label == "depth", "batch"].tolist() == [8, 4]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "depth_pruned_4b_vs_llama31_8b_avg_throughput_speedup" in md and "| depth | hf | teacher | depth |" in md
    # another baseline, and one that is not there
    assert set(report.write_report([tmp_path / "runs"], tmp_path / "r2", baseline="depth")["label"]) == {
        "teacher", "width"}
    with pytest.raises(ValueError, match="--baseline 'nope' is not among the labels"):
        report.write_report([tmp_path / "runs"], tmp_path / "r3", baseline="nope")
    # a label that names two models would have one's points silently replace the other's
    records.append_record(tmp_path / "other" / records.RECORDS_NAME, {**record("teacher", 16, 8, 9.0),
                                                                       "model": "elsewhere/teacher"})
    with pytest.raises(ValueError, match="the label 'teacher' names several models"):
        report.write_report([tmp_path / "runs", tmp_path / "other"], tmp_path / "r4")


def test_kinds_of_model_against_the_baseline():
    base = record("t", 16, 8, 1.0)
    assert report.kind_of(record("d", 16, 8, 1.0, layers=2), base) == "depth"
    assert report.kind_of(record("w", 16, 8, 1.0, hidden=48), base) == "width"
    assert report.kind_of(record("q", 16, 8, 1.0, dtype="fp8"), base) == "fp8"
    assert report.kind_of(record("b", 16, 8, 1.0, layers=2, hidden=48), base) == "other"
