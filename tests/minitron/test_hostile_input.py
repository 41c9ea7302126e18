"""Hostile input that once destroyed data or trained on nonsense: each case is refused before any work, with a
message that names the problem, and every input is left as it was."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import stdlib_texts, tiny_model
from minitron.core.model_io import save_checkpoint

from minitron import cli, pipeline


@pytest.fixture
def models(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    save_checkpoint(tiny_model("llama", layers=4), tokenizer, tmp_path / "project" / "model")
    (tmp_path / "data.txt").write_text("\n\n".join(stdlib_texts(4)))
    return tmp_path


def digest(folder: Path) -> str:
    """The folder's file names and bytes, so a test sees any file added, removed or changed."""
    h = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(folder)).encode() + file.read_bytes())
    return h.hexdigest()


TRAIN = ["--steps", 1, "--seq-len", 32, "--global-batch", 2, "--micro-batch", 2]
PRUNE = ["--hidden-size", 36, "--seq-len", 32, "--num-samples", 4, "--batch-size", 2]


@pytest.mark.parametrize("command, message", [
    (["distill", "--teacher", "{model}", "--student", "{model}", "--out", "{model}"], "is the input"),
    (["correct", "--model", "{model}", "--out", "{model}"], "is the input"),
    (["distill", "--teacher", "{model}", "--student", "{model}", "--out", "{project}"], "holds the input"),
    (["prune", "width", "--model", "{model}", "--calib", "{data}", "--out", "{project}", *PRUNE], "holds the input"),
    (["prune", "width", "--model", "{model}", "--calib", "{data}", "--out", "{model}/student", *PRUNE],
     "lies inside the input"),
    (["prune", "depth", "--model", "{model}", "--calib", "{data}", "--out", "{model}", "--drop", "1"],
     "is the input"),
])
def test_an_output_that_overlaps_an_input_is_refused_even_with_overwrite(models, command, message, capsys):
    places = {"model": models / "project" / "model", "project": models / "project", "data": models / "data.txt"}
    before = digest(models / "project")
    args = [str(a).format(**places) for a in command]
    if args[0] in ("distill", "correct"):
        args += ["--data", str(places["data"]), *map(str, TRAIN)]
    assert cli.main(args + ["--overwrite"]) == 2
    assert message in capsys.readouterr().err
    assert digest(models / "project") == before


@pytest.mark.parametrize("tokens", [0, -100])
def test_a_token_budget_must_be_positive(models, tokens, capsys):
    model = models / "project" / "model"
    assert cli.main(["distill", "--teacher", str(model), "--student", str(model), "--data", str(models / "data.txt"),
                     "--out", str(models / "out"), "--tokens", str(tokens), "--seq-len", "32"]) == 2
    assert "--tokens must be a positive token budget" in capsys.readouterr().err
    assert not (models / "out").exists()


@pytest.mark.parametrize("name", ["../userdata", "a/b", "..", ""])
def test_a_recipe_name_is_a_folder_name_not_a_path(models, name):
    model = models / "project" / "model"
    recipe = models / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": name, "work_dir": str(models / "work"),
                                      "teacher": {"model": str(model), "config": str(model / "config.json")},
                                      "data": str(models / "data.txt"), "prune": {"method": "width",
                                                                                  "hidden_size": 36},
                                      "distill": {"steps": 1, "seq_len": 32, "global_batch": 2}}))
    with pytest.raises(ValueError, match="must be a plain folder name"):
        pipeline.plan(recipe)


def test_a_width_target_transformers_rejects_is_refused_before_importance(models, capsys, monkeypatch):
    """transformers 5 wants a hidden size that its heads divide (6 heads, hidden 40: no): known from the config
    in a second, so no calibration pass may run first."""
    import transformers
    from minitron.compress import prune

    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4.57 builds such a config")
    monkeypatch.setattr(prune, "load_and_estimate",
                        lambda *a, **k: pytest.fail("importance ran before the target check"))
    model = models / "project" / "model"
    assert cli.main(["prune", "width", "--model", str(model), "--calib", str(models / "data.txt"), "--out",
                     str(models / "out"), "--hidden-size", "40", "--seq-len", "32", "--num-samples", "4"]) == 2
    assert "rejects the target config" in capsys.readouterr().err


def spoil(models: Path, how: str) -> Path:
    """A copy of the model with one thing wrong, as users' disks and downloads deliver them."""
    import json
    import shutil

    folder = models / how
    shutil.copytree(models / "project" / "model", folder)
    weights, config = folder / "model.safetensors", folder / "config.json"
    if how == "cut-weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "garbage-config":
        config.write_text("not json{")
    elif how == "empty-config":
        config.write_text("{}")
    elif how == "other-config":
        config.write_text(json.dumps({**json.loads(config.read_text()), "intermediate_size": 80}))
    return folder


@pytest.mark.parametrize("how, message", [
    ("cut-weights", "is not a whole safetensors file"),
    ("garbage-config", "is not a model config transformers can read"),
    # transformers 4.57 guesses a type from the folder's name ("e-mpt-y": MPT), which is then refused as unsupported
    ("empty-config", "is not a model config transformers can read|unsupported architecture"),
    ("other-config", r"has shape \[48, 96\] but config.json gives \[48, 80\]"),
])
def test_a_damaged_checkpoint_is_named_not_a_traceback(models, how, message, capsys):
    folder = spoil(models, how)
    assert cli.main(["prune", "width", "--model", str(folder), "--calib", str(models / "data.txt"), "--out",
                     str(models / "out"), *map(str, PRUNE)]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_arch_names_a_missing_or_unsupported_config(models, capsys):
    (models / "gpt2.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    for config, message in ((models / "none.json", "no config.json"), (models / "gpt2.json", "supported: Llama")):
        assert cli.main(["arch", "--config", str(config), "--hidden-size", "36"]) == 2
        assert message in capsys.readouterr().err


def test_importance_files_that_rank_nothing_are_refused(models, capsys):
    import torch
    from safetensors.torch import save_file

    (models / "random.safetensors").write_bytes(bytes(range(256)) * 20)
    save_file({"hidden": torch.full((48,), float("nan")), "ffn": torch.ones(4, 96), "heads": torch.ones(4, 6),
               "layers": torch.ones(4)}, models / "nan.safetensors")
    save_file({"x": torch.ones(3)}, models / "other.safetensors")
    for scores, message in (("random", "is not an importance file"), ("nan", "hold NaN or infinite values"),
                            ("other", "lacks the ffn, heads, hidden, layers scores")):
        assert cli.main(["prune", "width", "--model", str(models / "project" / "model"), "--importance",
                         str(models / f"{scores}.safetensors"), "--out", str(models / "out"),
                         "--hidden-size", "36"]) == 2
        assert message in capsys.readouterr().err


def test_binary_calibration_data_is_refused(models, capsys):
    (models / "random.bin").write_bytes(bytes(range(256)) * 40)
    assert cli.main(["importance", "--model", str(models / "project" / "model"), "--calib",
                     str(models / "random.bin"), "--out", str(models / "scores.safetensors"), "--seq-len", "32",
                     "--num-samples", "4"]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--max-seq-len=-1", "--max-batch-size=0"])
def test_a_deployment_of_no_size_is_refused(models, flag, capsys):
    assert cli.main(["deploy", "--checkpoint", str(models / "project" / "model"), "--backend", "trtllm", "--out",
                     str(models / "deployed"), "--dry-run", flag]) == 2
    assert "must be positive" in capsys.readouterr().err and not (models / "deployed").exists()


def test_a_second_writer_of_a_folder_is_refused_naming_the_first(models, capsys):
    """Two commands writing one --out would mix their files; the second is refused while the first holds it."""
    import os

    from minitron.core.records import folder_lock

    out = models / "out"
    with folder_lock(out):
        model = models / "project" / "model"
        for command in (["prune", "depth", "--model", str(model), "--out", str(out), "--drop", "1"],
                        ["distill", "--teacher", str(model), "--student", str(model), "--data",
                         str(models / "data.txt"), "--out", str(out), *map(str, TRAIN)]):
            assert cli.main(command) == 2
            assert f"another process (PID {os.getpid()}) is writing" in capsys.readouterr().err
    assert not out.exists() and not list(models.glob(".out.*"))  # and the lock is gone with its holder
    assert cli.main(["prune", "depth", "--model", str(model), "--out", str(out), "--drop", "1"]) == 0


def test_a_killed_writers_temporary_folder_is_cleared_and_outputs_are_readable(models):
    import stat

    from minitron.core.records import output_dir

    leftover = models / ".out.tmp-999999999-abc"  # no such process
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    with output_dir(models / "out") as tmp:
        (tmp / "a.txt").write_text("a")
    assert not leftover.exists()
    assert stat.S_IMODE((models / "out").stat().st_mode) & 0o055 == 0o055 & ~_umask()  # not mkdtemp's 0700


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_folder_where_a_file_belongs_is_refused_before_the_work(models, capsys):
    (models / "scores").mkdir()
    assert cli.main(["importance", "--model", str(models / "project" / "model"), "--calib", str(models / "data.txt"),
                     "--out", str(models / "scores"), "--overwrite", "--seq-len", "32", "--num-samples", "4"]) == 2
    assert "is a folder; the scores are one file" in capsys.readouterr().err


@pytest.mark.skipif(not shutil.which("unshare") or subprocess.run(
    ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode != 0,
    reason="needs user and mount namespaces (util-linux unshare) to give the command a tiny or read-only disk")
@pytest.mark.parametrize("options, message", [("size=16k", "no space left on its disk"),
                                               ("ro", "its file system is read-only")])
def test_a_full_or_read_only_disk_is_one_sentence_and_leaves_nothing(models, options, message):
    """The output folder's disk is a tmpfs of 16 KiB (smaller than the model) or a read-only one, mounted in a
    namespace of the command's own."""
    disk = models / "disk"
    disk.mkdir()
    script = ('mount -t tmpfs -o "$2" tmpfs "$1" || exit 99; "$0" -m minitron prune depth --model "$3" --out '
              '"$1/out" --drop 1; code=$?; ls -A "$1"; exit $code')
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, sys.executable,
                           str(disk), options, str(models / "project" / "model")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MINITRON_CACHE": str(models / "cache")})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and message in done.stderr, done.stderr[-2000:]
    assert done.stdout.split() == [], f"left on the disk: {done.stdout}"  # no temporary folder, no lock
