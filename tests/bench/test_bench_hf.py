"""The embedded hf backend end to end on CPU: a teacher and its depth-pruned student (half the layers) swept in one
run, exact lengths, resume, the report with measured beside ideal speedups, and bad input through the CLI."""

import pytest
import torch
import typer
from conftest import FAMILIES, MOE_FAMILIES, sample_ids, tiny_model
from minitron.bench.hf import generate_batch
from minitron.bench.records import RECORDS_NAME, read_records
from minitron.compress.depth import drop_layers
from minitron.core.model_io import save_checkpoint

from minitron import cli
from minitron.cli.bench import bench_app

GRID = "16/8,32/16"
SMALL = ["--batch-size", 4, "--num-requests", 8, "--repeats", 2]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("bench-hf")
    save_checkpoint(tiny_model(layers=4), tokenizer, root / "teacher")
    save_checkpoint(drop_layers(tiny_model(layers=4), [2, 3]), tokenizer, root / "depth")
    return root


def bench(*args):
    """`minitron bench ...` as the top-level command runs it: exceptions propagate, no sys.exit."""
    return bench_app(args=[str(a) for a in args], standalone_mode=False)


@pytest.fixture(scope="module")
def swept(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "cpu"
    bench("sweep", "--backend", "hf", "--model", models / "teacher", "--model", models / "depth", "--out", out,
          "--isl-osl", GRID, *SMALL, "--label", "teacher", "--label", "depth-2L")
    return out


@pytest.mark.parametrize("family", FAMILIES + MOE_FAMILIES)
def test_generate_batch_makes_exactly_osl_tokens_and_times_them(family):
    model = tiny_model(family, layers=2)
    with torch.inference_mode():
        timing = generate_batch(model, sample_ids(batch=3, seq=16), osl=12)
    assert timing.new_tokens == 12 and 0 < timing.ttft_s < timing.elapsed_s


def test_sweep_of_two_points_records_the_requested_lengths(swept, models):
    records = read_records(swept / RECORDS_NAME)
    assert [(r["label"], r["isl"], r["osl"]) for r in records] == [
        ("teacher", 16, 8), ("teacher", 32, 16), ("depth-2L", 16, 8), ("depth-2L", 32, 16)]
    for r in records:
        assert (r["actual_isl"], r["actual_osl"], r["length_mismatch"]) == (r["isl"], r["osl"], False)
        assert (r["backend"], r["engine"], r["batch_size"], r["concurrency"], r["num_requests"]) == (
            "hf", "transformers", 4, 4, 8)
        assert r["requests_per_s_min"] <= r["requests_per_s"] <= r["requests_per_s_max"] and len(r["per_repeat"]) == 2
        assert r["output_tokens_per_s"] == pytest.approx(r["requests_per_s"] * r["osl"])
        assert r["ttft_ms"]["p50"] > 0 and r["tpot_ms"]["p99"] > 0
        assert (r["dtype"], r["kv_cache_dtype"], r["seed"], r["warmup_requests"]) == ("float32", "float32", 1234, 4)
        assert r["provenance"]["torch"] == torch.__version__ and "git_sha" in r["provenance"]
    assert records[0]["model"] == str((models / "teacher").resolve())
    assert (records[0]["arch"]["layers"], records[2]["arch"]["layers"]) == (4, 2)


def test_rerun_resumes_and_a_new_point_is_added(swept, models):
    before = (swept / RECORDS_NAME).read_text()
    bench("sweep", "--model", models / "teacher", "--model", models / "depth", "--out", swept, "--isl-osl", GRID,
          *SMALL, "--label", "teacher", "--label", "depth-2L")
    assert (swept / RECORDS_NAME).read_text() == before  # nothing re-measured
    with pytest.raises(ValueError, match="the label 'teacher' already names .*teacher in this --out"):
        bench("sweep", "--model", models / "depth", "--out", swept, "--isl-osl", GRID, *SMALL, "--label", "teacher")


def test_plot_reports_the_measured_speedup_beside_the_ideal_one(swept, tmp_path):
    bench("plot", swept, "--out", tmp_path / "report")
    assert (tmp_path / "report" / "figure10.png").stat().st_size > 10_000
    summary = (tmp_path / "report" / "speedup.csv").read_text().splitlines()
    assert summary[0] == ("label,backend,vs,kind,points,avg_speedup,avg_ideal_flops,avg_ideal_bytes,of_ideal_bytes,"
                          "paper_speedup")
    label, backend, vs, kind, points, measured, flops, moved, of_ideal, paper = summary[1].split(",")
    assert (label, backend, vs, kind, points, paper) == ("depth-2L", "hf", "teacher", "depth", "2", "2.7")
    assert float(measured) > 0 and 1.5 < float(flops) < 2.0 and 1.5 < float(moved) < 2.0
    assert float(of_ideal) == pytest.approx(float(measured) / float(moved), rel=1e-3)
    assert "| depth-2L | hf | teacher | depth | 2 |" in (tmp_path / "report" / "report.md").read_text()


def test_bad_input_fails_before_running_and_keeps_the_records(swept, models, tmp_path):
    before = (swept / RECORDS_NAME).read_text()
    with pytest.raises(ValueError, match=r"ISL\+OSL 200\+100 = 300 exceeds the 256 positions of teacher"):
        bench("sweep", "--model", models / "teacher", "--out", swept, "--isl-osl", "8/8,200/100", *SMALL)
    with pytest.raises(ValueError, match="--label was given 1 times for 2 --model"):
        bench("sweep", "--model", models / "teacher", "--model", models / "depth", "--out", swept, "--label", "x")
    with pytest.raises(ValueError, match="--batch-size must be at least 1"):
        bench("sweep", "--model", models / "teacher", "--out", swept, "--isl-osl", "8/8", "--batch-size", 0)
    with pytest.raises(ValueError, match="--dtype fp8: the hf backend runs bfloat16, float16, float32"):
        bench("sweep", "--model", models / "teacher", "--out", swept, "--isl-osl", "8/8", "--dtype", "fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: this torch sees no CUDA device"):
            bench("sweep", "--model", models / "teacher", "--out", swept, "--isl-osl", "8/8", "--device", "cuda")
    assert (swept / RECORDS_NAME).read_text() == before
    with pytest.raises(FileNotFoundError, match="no records.jsonl there"):
        bench("plot", tmp_path, "--out", tmp_path / "report")


def test_top_level_command_maps_bad_input_to_exit_2(models, tmp_path, capsys, monkeypatch):
    """Through `minitron.main` with bench registered as minitron/cli.py registers it: one line, exit 2."""
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    app.add_typer(bench_app, name="bench")
    monkeypatch.setattr(cli, "app", app)
    code = cli.main(["bench", "sweep", "--backend", "trtllm", "--model", str(models / "teacher"),
                          "--out", str(tmp_path / "out"), "--isl-osl", "16/8"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --backend trtllm takes a deployment folder") and "Traceback" not in err
    assert "make one with `minitron deploy" in err and not (tmp_path / "out").exists()
