"""metrics.jsonl reading (resumed runs, live logs) and the loss-curve plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from minitron.compress.curves import plot_curves, read_metrics
from typer.testing import CliRunner

from minitron.cli.compress import plot


def _write_log(path: Path, steps: int, tokens_per_step: int, *, resumed_at: int | None = None,
               with_kd: bool = True) -> Path:
    """A plausible run: train lines every step, val lines every 5; optionally resumed at `resumed_at`, which
    re-logs the steps from there with different (the surviving run's) values."""
    def lines(first: int, offset: float):
        for step in range(first, steps + 1):
            loss = 3.0 / (1 + 0.1 * step) + offset
            yield {"split": "train", "step": step, "tokens": step * tokens_per_step, "lr": 1e-4, "loss": loss,
                   "kd": loss if with_kd else None, "lm": None, "grad_norm": 1.0, "tokens_per_s": 5e4}
            if step % 5 == 0:
                yield {"split": "val", "step": step, "tokens": step * tokens_per_step, "val_loss": loss + 0.1,
                       "val_kl": loss if with_kd else None}

    records = list(lines(1, 0.5))
    if resumed_at is not None:
        records = [r for r in records if r["step"] < resumed_at + 3] + list(lines(resumed_at, 0.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def logs(tmp_path):
    return [_write_log(tmp_path / "width" / "metrics.jsonl", 40, 4096, resumed_at=20),
            _write_log(tmp_path / "depth" / "metrics.jsonl", 30, 8192, with_kd=False)]


def test_read_metrics_keeps_the_last_of_each_step(logs):
    df = read_metrics(logs[0])
    train, val = df[df["split"] == "train"], df[df["split"] == "val"]
    assert list(train["step"]) == list(range(1, 41))
    assert list(val["step"]) == [5, 10, 15, 20, 25, 30, 35, 40]
    # Steps 20-22 were logged twice; the resumed run's values (offset 0) win.
    for step in (20, 21, 22):
        assert train.loc[train["step"] == step, "loss"].item() == pytest.approx(3.0 / (1 + 0.1 * step))
    assert val.loc[val["step"] == 20, "val_loss"].item() == pytest.approx(3.0 / 3 + 0.1)
    assert train.loc[train["step"] == 19, "loss"].item() == pytest.approx(3.0 / 2.9 + 0.5)


def test_read_metrics_skips_a_half_written_last_line(tmp_path, logs):
    live = tmp_path / "live.jsonl"
    live.write_text(logs[1].read_text() + '{"split": "train", "step": 31, "to')
    assert len(read_metrics(live)) == len(read_metrics(logs[1]))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"split": "train"\n' + logs[1].read_text())
    with pytest.raises(ValueError, match="broken.jsonl:1 is not valid JSON"):
        read_metrics(broken)


@pytest.mark.parametrize("metric,x,ema", [("val_loss", "tokens", 0.0), ("loss", "step", 0.9)])
def test_plot_writes_a_png(tmp_path, logs, metric, x, ema):
    out = tmp_path / "figs" / "curves.png"
    plot_curves(logs, None, out, metric=metric, x=x, title="Minitron", ema=ema)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 5_000


def test_errors_name_the_file_and_its_metrics(tmp_path, logs):
    with pytest.raises(ValueError, match=r"depth.*metrics.jsonl has no values for metric 'val_kl'; it has: "
                                         r"val_loss, loss, grad_norm, lr, tokens_per_s"):
        plot_curves(logs, None, tmp_path / "x.png", metric="val_kl")
    with pytest.raises(ValueError, match="missing.jsonl does not exist"):
        plot_curves([tmp_path / "missing.jsonl"], None, tmp_path / "x.png")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl is empty"):
        plot_curves([empty], None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="unknown metric 'val_ppl'"):
        plot_curves(logs, None, tmp_path / "x.png", metric="val_ppl")
    with pytest.raises(ValueError, match="1 labels for 2 logs"):
        plot_curves(logs, ["only-one"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_command(tmp_path, logs):
    app = typer.Typer()
    app.command()(plot)
    out = tmp_path / "cli.png"
    result = CliRunner().invoke(app, [*map(str, logs), "--out", str(out), "--metric", "val_loss", "--x", "step",
                                      "--labels", "4B-Width, 4B-Depth", "--title", "Llama-3.1-Minitron"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 5_000
