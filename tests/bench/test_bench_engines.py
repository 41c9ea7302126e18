"""The engine backends up to their boundary: trtllm-bench and vllm command lines on their documented flags, their
report formats parsed, full sweeps through stand-in executables, vLLM's LLM API through a stand-in module, and
the openai backend against a small streaming server started here. No GPU, no engine installed."""

import importlib.machinery
import json
import os
import stat
import sys
import textwrap
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import tiny_model
from minitron.bench import trtllm, vllm
from minitron.bench.records import RECORDS_NAME, read_records
from minitron.bench.sweep import Settings, sweep
from minitron.bench.target import resolve
from minitron.core.errors import EngineFailed, EngineUnavailable
from minitron.core.model_io import save_checkpoint

SMALL = Settings(batch_size=4, num_requests=8, repeats=2, warmup=4)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer):
    """A tiny checkpoint, and deployment folders around it as `minitron deploy` lays them out."""
    root = tmp_path_factory.mktemp("engines")
    save_checkpoint(tiny_model(layers=2), tokenizer, root / "ckpt")
    for name, engine in (("deploy", "pytorch"), ("deploy-trt", "tensorrt")):
        save_checkpoint(tiny_model(layers=2), tokenizer, root / name / "checkpoint")
        (root / name / "extra_llm_api_options.yaml").write_text("kv_cache_config:\n  dtype: fp8\n")
        (root / name / "manifest.json").write_text(json.dumps({
            "backend": "trtllm", "engine": engine, "quantization": "fp8", "kv_cache_dtype": "fp8",
            "max_batch_size": 4, "max_num_tokens": 8192, "max_seq_len": 256,
            "installed_engine_version": None, "versions": {}}))
    return root


def executable(folder, name, source):
    """A stand-in for an engine's command, in Python, on a folder to put on PATH."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(source))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


# --- TensorRT-LLM ---

# A `trtllm-bench throughput --streaming --report_json` report, laid out as TensorRT-LLM's
# bench/dataclasses/reporting.py writes it (percentile blocks in ms with average/p50/p90/p95/p99/minimum/maximum).
TRTLLM_REPORT = {
    "engine": {"model": "ckpt", "model_path": "ckpt", "engine_dir": "None", "version": "1.2.1",
               "backend": "Pytorch", "dtype": "bfloat16", "kv_cache_dtype": "FP8", "quantization": "FP8"},
    "machine": {"name": "NVIDIA H100 80GB HBM3", "memory.total": 79.1, "clocks.mem": 2.6},
    "world_info": {"tp_size": 1, "pp_size": 1, "ep_size": 1, "world_size": 1, "max_batch_size": 32,
                   "max_num_tokens": 8192, "scheduling_policy": "guaranteed_no_evict", "kv_cache_percentage": 0.9,
                   "issue_rate": 1.0e9},
    "request_info": {"num_requests": 128, "avg_num_concurrent_requests": 31.2, "avg_input_length": 128.0,
                     "avg_output_length": 128.0},
    "performance": {"total_latency_ms": 4000.0, "avg_request_latency_ms": 980.0, "request_throughput_req_s": 32.0,
                    "system_output_throughput_tok_s": 4096.0, "system_total_throughput_tok_s": 8192.0,
                    "output_throughput_per_user_tok_s": 130.0, "output_throughput_per_gpu_tok_s": 4096.0,
                    "request_latency_percentiles_ms": {"p50": 975.0, "p90": 990.0, "p95": 995.0, "p99": 999.0,
                                                       "minimum": 950.0, "maximum": 1001.0, "average": 980.0}},
    "streaming_metrics": {
        "token_output_speed_tok_s": 135.0, "avg_ttft_ms": 41.0, "avg_tpot_ms": 7.4,
        "tpot_percentiles": {"p50": 7.3, "p90": 7.8, "p95": 7.9, "p99": 8.1, "minimum": 7.0, "maximum": 8.2,
                             "average": 7.4},
        "ttft_percentiles": {"p50": 40.0, "p90": 55.0, "p95": 60.0, "p99": 70.0, "minimum": 20.0, "maximum": 71.0,
                             "average": 41.0},
        "gen_tps_percentiles": {"p50": 136.0, "p90": 140.0, "p95": 141.0, "p99": 142.0, "minimum": 120.0,
                                "maximum": 143.0, "average": 135.0}},
    "dataset": {"isl_stats": {}, "osl_stats": {}, "seq_len_stats": {}, "num_requests": 128},
}

FAKE_TRTLLM_BENCH = """
import json, sys
args = sys.argv[1:]
value = lambda flag: args[args.index(flag) + 1]
assert args[args.index("--model_path") + 2] == "throughput" and "--streaming" in args and value("--eos_id") == "-1"
requests = [json.loads(line) for line in open(value("--dataset"))]
isl = sum(len(r["input_ids"]) for r in requests) / len(requests)
osl = requests[0]["output_tokens"]
if isl > 20:
    print("[TensorRT-LLM][ERROR] CUDA out of memory while allocating the KV cache")
    sys.exit(1)
report = json.load(open(sys.argv[0] + ".report.json"))
report["request_info"].update(avg_input_length=isl, avg_output_length=osl, num_requests=len(requests))
json.dump(report, open(value("--report_json"), "w"))
"""


def test_trtllm_throughput_command_has_the_documented_flags(folders, tmp_path):
    target = resolve("trtllm", str(folders / "deploy"))
    cmd = trtllm.throughput_command(target, tmp_path / "d.jsonl", tmp_path / "r.json", batch_size=32,
                                    num_requests=128, warmup=32)
    ckpt = str(folders / "deploy" / "checkpoint")
    assert cmd == ["trtllm-bench", "--model", ckpt, "--model_path", ckpt, "throughput",
                   "--dataset", str(tmp_path / "d.jsonl"), "--backend", "pytorch", "--max_batch_size", "32",
                   "--concurrency", "32", "--num_requests", "128", "--warmup", "32", "--eos_id", "-1", "--streaming",
                   "--report_json", str(tmp_path / "r.json"),
                   "--extra_llm_api_options", str(folders / "deploy" / "extra_llm_api_options.yaml")]
    engine = trtllm.throughput_command(resolve("trtllm", str(folders / "deploy-trt")), tmp_path / "d.jsonl",
                                       tmp_path / "r.json", 32, 128, 32)
    assert engine[engine.index("--backend") + 1] == "tensorrt"
    assert engine[engine.index("--engine_dir") + 1] == str(folders / "deploy-trt" / "engine")


def test_trtllm_report_parses_into_the_schema():
    repeat, facts = trtllm.parse_report(TRTLLM_REPORT)
    assert (repeat.requests_per_s, repeat.output_tokens_per_s, repeat.total_tokens_per_s) == (32.0, 4096.0, 8192.0)
    assert (repeat.actual_isl, repeat.actual_osl, repeat.elapsed_s) == (128.0, 128.0, 4.0)
    assert repeat.ttft_ms == {"mean": 41.0, "p50": 40.0, "p90": 55.0, "p99": 70.0}
    assert repeat.tpot_ms == {"mean": 7.4, "p50": 7.3, "p90": 7.8, "p99": 8.1}
    assert facts == {"engine_version": "1.2.1", "dtype": "fp8", "kv_cache_dtype": "fp8"}
    plain = {**TRTLLM_REPORT, "engine": {**TRTLLM_REPORT["engine"], "quantization": None, "kv_cache_dtype": None}}
    plain.pop("streaming_metrics")
    repeat, facts = trtllm.parse_report(plain)
    assert (facts["dtype"], facts["kv_cache_dtype"], repeat.ttft_ms) == ("bfloat16", "bfloat16", None)
    with pytest.raises(EngineFailed, match="lacks 'performance'"):
        trtllm.parse_report({"engine": {}})


def test_trtllm_sweep_through_a_stand_in_trtllm_bench_keeps_records_when_a_point_fails(folders, tmp_path,
                                                                                        monkeypatch):
    fake = executable(tmp_path / "bin", "trtllm-bench", FAKE_TRTLLM_BENCH)
    (tmp_path / "bin" / "trtllm-bench.report.json").write_text(json.dumps(TRTLLM_REPORT))
    out = tmp_path / "out"
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EngineUnavailable, match="`trtllm-bench` is not on PATH: install TensorRT-LLM"):
        sweep("trtllm", [str(folders / "deploy")], out, [(16, 8)], SMALL)
    assert read_records(out / RECORDS_NAME) == []
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(EngineFailed, match=r"(?s)failed \(exit 1\).*CUDA out of memory.*Full log: "):
        sweep("trtllm", [str(folders / "deploy")], out, [(16, 8), (32, 8)], SMALL)
    [kept] = read_records(out / RECORDS_NAME)
    assert (kept["isl"], kept["actual_isl"], kept["actual_osl"], kept["length_mismatch"]) == (16, 16.0, 8.0, False)
    assert (kept["engine"], kept["engine_version"], kept["dtype"], kept["kv_cache_dtype"]) == (
        "tensorrt-llm", "1.2.1", "fp8", "fp8")
    assert kept["requests_per_s"] == 32.0 and kept["ttft_ms"]["p99"] == 70.0 and len(kept["per_repeat"]) == 2
    assert kept["command"][:2] == ["trtllm-bench", "--model"] and kept["arch"]["layers"] == 2
    dataset = [json.loads(x) for x in (out / "raw" / "deploy-16x8-b4.dataset.jsonl").read_text().splitlines()]
    assert len(dataset) == 8 and {len(d["input_ids"]) for d in dataset} == {16}
    # rerun: the finished point is skipped, the failing one fails again, nothing is duplicated
    with pytest.raises(EngineFailed):
        sweep("trtllm", [str(folders / "deploy")], out, [(16, 8), (32, 8)], SMALL)
    assert len(read_records(out / RECORDS_NAME)) == 1


# --- vLLM ---

VLLM_STDOUT = """Throughput: 12.50 requests/s, 2437.50 total tokens/s, 1600.00 output tokens/s
Total num prompt tokens:  6600
Total num output tokens:  8192
"""
VLLM_JSON = {"elapsed_time": 5.12, "num_requests": 64, "total_num_tokens": 14792, "requests_per_second": 12.5,
             "tokens_per_second": 2889.06}

FAKE_VLLM = """
import json, sys
args = sys.argv[1:]
if args == ["--version"]:
    print("0.11.0")
    sys.exit(0)
assert args[:2] == ["bench", "throughput"]
value = lambda flag: int(args[args.index(flag) + 1]) if flag != "--output-json" else args[args.index(flag) + 1]
n, isl, osl = value("--num-prompts"), value("--input-len"), value("--output-len")
prompt, output = n * (isl + 3), n * osl  # random prompts re-tokenize a few tokens long
json.dump({"elapsed_time": 2.0, "num_requests": n, "total_num_tokens": prompt + output,
           "requests_per_second": n / 2.0, "tokens_per_second": (prompt + output) / 2.0},
          open(value("--output-json"), "w"))
print(f"Total num prompt tokens:  {prompt}")
print(f"Total num output tokens:  {output}")
"""


def test_vllm_throughput_command_has_the_documented_flags(folders, tmp_path):
    cmd = vllm.throughput_command(resolve("vllm", str(folders / "deploy")), 128, 2048, 256, 64, 1234,
                                  tmp_path / "o.json")
    assert cmd == ["vllm", "bench", "throughput", "--model", str(folders / "deploy" / "checkpoint"),
                   "--dataset-name", "random", "--input-len", "128", "--output-len", "2048",
                   "--random-range-ratio", "0", "--num-prompts", "256", "--max-num-seqs", "64", "--seed", "1234",
                   "--output-json", str(tmp_path / "o.json"), "--quantization", "modelopt", "--kv-cache-dtype", "fp8"]
    plain = vllm.throughput_command(resolve("vllm", str(folders / "ckpt")), 128, 128, 8, 4, 1, tmp_path / "o.json")
    assert "--quantization" not in plain and "--kv-cache-dtype" not in plain


def test_vllm_report_parses_with_the_measured_lengths():
    repeat = vllm.parse_throughput(VLLM_JSON, VLLM_STDOUT)
    assert (repeat.requests_per_s, repeat.total_tokens_per_s) == (12.5, 2889.06)
    assert repeat.output_tokens_per_s == pytest.approx(8192 / 5.12)
    assert (repeat.actual_isl, repeat.actual_osl) == (6600 / 64, 128.0)
    older = vllm.parse_throughput(VLLM_JSON, "", osl=128)  # no totals printed: ISL from the total, OSL unmeasured
    assert (older.actual_isl, older.actual_osl) == ((14792 - 64 * 128) / 64, None)
    with pytest.raises(EngineFailed, match="lacks 'elapsed_time'"):
        vllm.parse_throughput({"num_requests": 1}, VLLM_STDOUT)


def test_vllm_cli_sweep_records_and_flags_the_longer_prompts(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EngineUnavailable, match="vLLM is neither importable here nor on PATH"):
        sweep("vllm", [str(folders / "ckpt")], tmp_path / "none", [(16, 8)], SMALL)
    fake = executable(tmp_path / "bin", "vllm", FAKE_VLLM)
    monkeypatch.setenv("PATH", str(fake.parent))
    sweep("vllm", [str(folders / "ckpt")], tmp_path / "out", [(16, 8)], SMALL)
    [r] = read_records(tmp_path / "out" / RECORDS_NAME)
    assert (r["actual_isl"], r["actual_osl"], r["length_mismatch"]) == (19.0, 8.0, True)
    assert (r["engine"], r["engine_version"], r["warmup_requests"], r["requests_per_s"]) == ("vllm", "0.11.0", 0, 4.0)
    assert r["command"][:3] == ["vllm", "bench", "throughput"] and r["dtype"] == "float32"


def test_vllm_llm_api_gets_token_prompts_forced_to_osl(folders, tmp_path, monkeypatch):
    calls = {}

    class LLM:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def generate(self, prompts, params, use_tqdm=True):
            calls.setdefault("params", []).append(params)
            return [types.SimpleNamespace(prompt_token_ids=p["prompt_token_ids"],
                                          outputs=[types.SimpleNamespace(token_ids=[5] * params.max_tokens)])
                    for p in prompts]

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM, fake.__version__ = LLM, "0.11.0"
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    sweep("vllm", [str(folders / "deploy")], tmp_path / "out", [(16, 8), (24, 12)], SMALL)
    assert calls["init"] == {"model": str(folders / "deploy" / "checkpoint"), "max_num_seqs": 4, "max_model_len": 36,
                             "seed": 1234, "quantization": "modelopt", "kv_cache_dtype": "fp8"}
    warm, timed = calls["params"][0], calls["params"][1]
    assert (timed.max_tokens, timed.min_tokens, timed.ignore_eos, timed.temperature) == (8, 8, True, 0.0)
    assert warm.max_tokens == 8 and len(calls["params"]) == 2 * (1 + SMALL.repeats)
    records = read_records(tmp_path / "out" / RECORDS_NAME)
    assert [(r["actual_isl"], r["actual_osl"], r["length_mismatch"]) for r in records] == [
        (16.0, 8.0, False), (24.0, 12.0, False)]
    assert records[0]["dtype"] == "fp8" and records[0]["engine_version"] == "0.11.0"


# --- any OpenAI-compatible server ---

class FakeServer(BaseHTTPRequestHandler):
    """Streams one text chunk per token, then a usage chunk, like vLLM and trtllm-serve."""

    bodies: list = []
    budget = None  # completions it serves before it starts failing
    fault = None  # "cut" (no [DONE]), "usage" (reports fewer tokens than it streamed), "dribble" (slow tokens),
    # "chunked-cut" (the connection closes in the middle of a chunk of a chunked body)

    def log_message(self, *args):
        pass

    def _json(self, payload, code=200):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._json({"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "fake"}]})
        elif self.path == "/version":
            self._json({"version": "0.0-test"})
        else:
            self._json({"error": "not found"}, 404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if type(self).budget is not None:
            type(self).budget -= 1
            if type(self).budget < 0:
                return self._json({"error": {"message": "engine is shutting down"}}, 503)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if type(self).fault == "chunked-cut":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            event = f"data: {json.dumps({'choices': [{'index': 0, 'text': ' t0'}]})}\n\n".encode()
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n" + b"400\r\ndata: {\"cho")
            self.wfile.flush()
            return  # HTTP/1.0: the server closes the connection, 1 KiB short of the announced chunk
        self.end_headers()
        try:
            self._stream(body, type(self).fault)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up on a dribbling stream
            pass

    def _stream(self, body, fault):
        for i in range(body["max_tokens"]):
            time.sleep(0.3 if fault == "dribble" else 0.001)
            chunk = {"object": "text_completion", "choices": [{"index": 0, "text": f" t{i}", "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            if fault == "cut" and i == 2:
                return
        reported = body["max_tokens"] // 2 if fault == "usage" else body["max_tokens"]
        usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": reported,
                 "total_tokens": len(body["prompt"]) + reported}
        self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def server():
    FakeServer.bodies, FakeServer.budget, FakeServer.fault = [], None, None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_openai_streams_token_prompts_and_measures_ttft_tpot(folders, server, tmp_path):
    _, url = server
    sweep("openai", [url], tmp_path / "out", [(16, 8), (32, 6)], Settings(**{**SMALL.__dict__,
                                                                          "tokenizer": str(folders / "deploy")}))
    records = read_records(tmp_path / "out" / RECORDS_NAME)
    assert [(r["isl"], r["actual_isl"], r["actual_osl"], r["length_mismatch"]) for r in records] == [
        (16, 16.0, 8.0, False), (32, 32.0, 6.0, False)]
    r = records[0]
    assert (r["label"], r["engine"], r["engine_version"], r["concurrency"]) == (
        "deploy", "openai-compatible (fake)", "0.0-test", 4)
    assert 0 < r["ttft_ms"]["p50"] <= r["ttft_ms"]["p99"] and r["tpot_ms"]["mean"] > 0.5
    assert r["dtype"] == "fp8" and r["arch"]["layers"] == 2
    timed = FakeServer.bodies[-1]
    assert (timed["model"], timed["max_tokens"], timed["min_tokens"], timed["ignore_eos"], timed["stream"]) == (
        "tiny", 6, 6, True, True)
    assert len(timed["prompt"]) == 32 and all(isinstance(t, int) for t in timed["prompt"])
    assert len(FakeServer.bodies) == 2 * (4 + 2 * 8)  # warm-up batch and two repeats of 8 requests, per point


def test_openai_server_failures_are_clear_and_keep_the_records(folders, server, tmp_path):
    httpd, url = server
    settings = Settings(**{**SMALL.__dict__, "tokenizer": str(folders / "ckpt")})
    FakeServer.budget = 4 + 2 * 8  # enough for the first point only
    with pytest.raises(EngineFailed, match=r"refused a completion \(HTTP 503\): .*shutting down"):
        sweep("openai", [url], tmp_path / "out", [(16, 8), (32, 8)], settings)
    assert [r["isl"] for r in read_records(tmp_path / "out" / RECORDS_NAME)] == [16]
    httpd.shutdown()
    httpd.server_close()
    with pytest.raises(EngineUnavailable, match="no OpenAI-compatible server answers at .*/v1/models"):
        sweep("openai", [url], tmp_path / "out", [(16, 8), (32, 8)], settings)
    assert [r["isl"] for r in read_records(tmp_path / "out" / RECORDS_NAME)] == [16]


@pytest.mark.parametrize("fault, message", [
    ("cut", "cut a stream short"),
    ("usage", "reported 4 completion tokens but streamed 8 chunks"),
    ("dribble", "did not finish a 8-token completion within --timeout 1 s"),
    ("chunked-cut", "stopped answering mid-run"),
])
def test_an_unfinished_or_inconsistent_stream_is_not_counted(server, fault, message):
    """A stream cut mid-way, a usage count that disagrees with what arrived, or tokens dribbling past the
    deadline would each give a throughput for requests that never finished."""
    from minitron.bench.openai import stream_completion

    _, url = server
    FakeServer.fault = fault
    with pytest.raises(EngineFailed, match=message):
        stream_completion(url, "tiny", [1, 2, 3], osl=8, timeout=1.0)
