"""`minitron run --verify`: a rerun from nothing matches the committed findings, and a changed verdict or a number
beyond the recipe's tolerance fails it."""

import pandas as pd
import pytest
import yaml
from test_pipeline import recipe  # noqa: F401  (the fixture)

from minitron import pipeline
from minitron.verify import VerificationFailed, compare


def write_findings(folder, held=True, loss=5.0, speed=1.5):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"figure": "Figure 7", "claim": "width beats depth", "rule": "r", "measured": "m", "held": held,
                   "testable": True, "seeds": 3},
                  {"figure": "Figure 8", "claim": "ends matter", "rule": "r", "measured": "m", "held": None,
                   "testable": False, "seeds": 0}]).to_csv(folder / "findings.csv", index=False)
    pd.DataFrame([{"run": "width", "tokens": 100, "val_loss_final": loss, "final_sd": 0.01}]).to_csv(
        folder / "width-vs-depth.csv", index=False)
    pd.DataFrame([{"label": "depth", "avg_speedup": speed}]).to_csv(folder / "throughput.csv", index=False)


def test_a_flipped_verdict_or_a_number_beyond_tolerance_is_a_change(tmp_path):
    write_findings(tmp_path / "committed")
    write_findings(tmp_path / "same", loss=5.2, speed=3.0)  # 4% and a faster machine: within tolerance
    changes, verdicts, numbers = compare(tmp_path / "committed", tmp_path / "same", tolerance=0.05)
    assert (changes, verdicts, numbers) == ([], 2, 1)  # tokens, spreads and throughput are not headline numbers
    write_findings(tmp_path / "other", held=None, loss=5.3)
    changes, _, _ = compare(tmp_path / "committed", tmp_path / "other", tolerance=0.05)
    assert [(c.what, c.committed) for c in changes] == [
        ("verdict: Figure 7: width beats depth", "held"), ("width-vs-depth / width / val_loss_final", "5")]
    assert changes[0].rerun == "inconclusive (within noise)" and changes[1].rerun == "5.3 (+6.0%)"
    with pytest.raises(FileNotFoundError, match="run the recipe without --verify first"):
        compare(tmp_path / "nothing", tmp_path / "same")


def test_verify_reruns_from_nothing_and_fails_when_the_committed_findings_differ(recipe):  # noqa: F811
    with pytest.raises(ValueError, match="no `findings` section"):
        pipeline.run(recipe, verify=True)
    body = yaml.safe_load(recipe.read_text())
    body["prune"]["depth_layers"] = 2
    body["findings"] = {"out": str(recipe.parent / "results"), "baselines": False}
    recipe.write_text(yaml.safe_dump(body))
    pipeline.run(recipe)
    committed = recipe.parent / "results"
    before = (committed / "findings.csv").read_text()
    pipeline.run(recipe, verify=True)  # every stage again, from nothing, under work/verify/
    scratch = recipe.parent / "work" / "verify" / "tiny-test"
    assert (scratch / "distilled" / "minitron.json").is_file() and (scratch / "findings" / "findings.csv").is_file()
    assert "every verdict the same" in (scratch / "verify.md").read_text()
    assert (committed / "findings.csv").read_text() == before  # the committed folder is only read
    table = pd.read_csv(committed / "width-vs-depth.csv")
    table["val_loss_final"] *= 1.5
    table.to_csv(committed / "width-vs-depth.csv", index=False)
    with pytest.raises(VerificationFailed, match="changed against"):
        pipeline.run(recipe, verify=True)
    assert "val_loss_final" in (scratch / "verify.md").read_text()
