"""The regression gate and the tables on synthetic run folders: the statistics, drift, and bad input."""

import json

import pytest
from minitron.evals.gate import GateInputError, gate
from minitron.evals.table import write_table

from minitron import cli


def make_run(folder, per_doc: list[float], suite="fixtures", prompts=None, label=None, metric="acc"):
    """A run folder as `minitron eval run` writes it, with one task whose documents score `per_doc`."""
    folder.mkdir(parents=True)
    task = "minitron_fixture_winogrande"
    mean = sum(per_doc) / len(per_doc)
    results = {"results": {task: {f"{metric},none": mean, f"{metric}_stderr,none": 0.1}},
               "higher_is_better": {task: {metric: True}}}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "samples").mkdir()
    prompts = prompts or [f"p{i}" for i in range(len(per_doc))]
    with (folder / "samples" / f"{task}.jsonl").open("w") as f:
        for i, (value, prompt) in enumerate(zip(per_doc, prompts)):
            f.write(json.dumps({"doc_id": i, "doc_hash": f"d{i}", "prompt_hash": prompt, "filter": "none",
                                metric: value}) + "\n")
    record = {"stage": "eval", "suite": suite, "model": str(folder), "label": label, "paper_table": "table1_base.csv",
              "suite_tasks": [{"task": task, "metric": f"{metric},none", "paper_row": "winogrande"}],
              "unsupported": []}
    (folder / "minitron.json").write_text(json.dumps(record))
    return folder


BASE = [1, 0, 1, 1, 0, 1, 1, 0, 1, 1] * 10  # 100 documents, 70% correct


def test_a_run_passes_against_itself(tmp_path):
    run = make_run(tmp_path / "a", BASE)
    verdicts = gate(run, run)
    assert [v.status for v in verdicts] == ["ok"] and verdicts[0].paired == 100 and verdicts[0].delta == 0
    assert cli.main(["eval", "gate", str(run), str(run)]) == 0


def test_a_consistent_drop_fails_and_noise_does_not(tmp_path, capsys):
    base = make_run(tmp_path / "base", BASE)
    worse = list(BASE)
    for i in range(0, 100, 10):  # ten documents it used to get right, now wrong: -10 points, paired
        worse[i] = 0
    assert cli.main(["eval", "gate", str(base), str(make_run(tmp_path / "worse", worse))]) == 1
    assert "1 regressed: minitron_fixture_winogrande" in capsys.readouterr().out
    swapped = list(BASE)  # one document lost, another gained: no net change
    swapped[0], swapped[1] = 0, 1
    assert gate(base, make_run(tmp_path / "swapped", swapped))[0].status == "ok"


def test_pairing_is_tighter_than_aggregate_stderrs(tmp_path):
    base = make_run(tmp_path / "base", BASE)
    worse = list(BASE)
    for i in (0, 10, 20, 30, 40):  # -5 points: well inside two aggregate stderrs (0.14), far outside the paired one
        worse[i] = 0
    verdict = gate(base, make_run(tmp_path / "worse", worse))[0]
    assert verdict.status == "REGRESSED"
    assert verdict.stderr < 0.03 < (0.1**2 + 0.1**2) ** 0.5


def test_retraining_noise_widens_the_standard_error(tmp_path):
    """-5 points paired is a regression between two fixed models, but not when each run is one draw of a
    retraining whose accuracy moves by 3 points from seed to seed; -20 points still is."""
    base = make_run(tmp_path / "base", BASE)
    worse = list(BASE)
    for i in (0, 10, 20, 30, 40):
        worse[i] = 0
    verdict = gate(base, make_run(tmp_path / "worse", worse), retrain_sd=0.03)[0]
    assert verdict.status == "ok" and abs(verdict.stderr - (0.0224 ** 2 + 2 * 0.03 ** 2) ** 0.5) < 0.002
    much_worse = [0 if i % 5 == 0 else v for i, v in enumerate(BASE)]
    assert cli.main(["eval", "gate", str(base), str(make_run(tmp_path / "much", much_worse)),
                          "--retrain-sd", "0.03"]) == 1
    assert cli.main(["eval", "gate", str(base), str(base), "--retrain-sd", "3"]) == 2


def test_a_changed_prompt_is_drift_not_regression(tmp_path, capsys):
    base = make_run(tmp_path / "base", BASE)
    worse = [0] * 100
    changed = make_run(tmp_path / "changed", worse, prompts=[f"new{i}" for i in range(100)])
    verdict = gate(base, changed)[0]
    assert verdict.status == "drift" and verdict.drifted == 100
    assert cli.main(["eval", "gate", str(base), str(changed)]) == 2  # not judged is not a pass
    captured = capsys.readouterr()
    assert "prompt drift (not judged): minitron_fixture_winogrande" in captured.out
    assert "regenerate the baseline" in captured.err


def test_unusable_input_exits_2(tmp_path, capsys):
    base = make_run(tmp_path / "base", BASE)
    other = make_run(tmp_path / "other", BASE, suite="base")
    assert cli.main(["eval", "gate", str(base), str(other)]) == 2
    assert "different suites" in capsys.readouterr().err
    assert cli.main(["eval", "gate", str(base), str(tmp_path)]) == 2
    assert "not an eval run folder" in capsys.readouterr().err
    with pytest.raises(GateInputError):
        gate(base, tmp_path / "missing")


def test_table_sets_runs_beside_the_paper(tmp_path):
    teacher = make_run(tmp_path / "t", BASE, label="teacher")
    student = make_run(tmp_path / "s", [0] + BASE[1:], label="student")
    table = write_table([teacher, student], tmp_path / "table", paper_columns=["Llama 3.1 8B", "Llama-3.1-Minitron 4B-Width"])
    row = table.loc["winogrande"]
    assert row["teacher"] == pytest.approx(70.0) and row["student"] == pytest.approx(69.0)
    assert row["student vs teacher"] == pytest.approx(-1.0)
    assert row["paper: Llama 3.1 8B"] == pytest.approx(77.3) and row["paper: Llama-3.1-Minitron 4B-Width"] == 73.5
    assert "| winogrande" in (tmp_path / "table" / "table.md").read_text()
    assert (tmp_path / "table" / "table.csv").read_text().startswith("benchmark,")


def edit_json(path, change) -> None:
    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(body))


def nan_aggregate(results):
    results["results"]["minitron_fixture_winogrande"]["acc,none"] = float("nan")


def drop_metric(results):
    del results["results"]["minitron_fixture_winogrande"]["acc,none"]


@pytest.mark.parametrize("file, change, message", [
    ("results.json", nan_aggregate, "not a finite number"),
    ("results.json", drop_metric, "has no acc,none for minitron_fixture_winogrande"),
    ("minitron.json", lambda record: record.update(suite_tasks=[]), "lists no tasks"),
    ("minitron.json", lambda record: record.pop("suite"), "incomplete eval run"),
    ("minitron.json", lambda record: record.update(suite_tasks=[{"task": "x"}]), "needs a task and a metric"),
])
def test_what_the_gate_cannot_judge_exits_2_and_says_what(tmp_path, capsys, file, change, message):
    """Broken runs must not turn into a green (0) or a red (1) CI job at random."""
    base, cand = make_run(tmp_path / "base", BASE), make_run(tmp_path / "cand", BASE)
    edit_json((base if file == "minitron.json" else cand) / file, change)
    assert cli.main(["eval", "gate", str(base), str(cand)]) == 2
    assert message in capsys.readouterr().err


def test_a_nan_or_unpaired_document_exits_2(tmp_path, capsys):
    base, cand = make_run(tmp_path / "base", BASE), make_run(tmp_path / "cand", BASE)
    samples = cand / "samples" / "minitron_fixture_winogrande.jsonl"
    lines = samples.read_text().splitlines()
    record = json.loads(lines[3])
    samples.write_text("\n".join(lines[:3] + [json.dumps({**record, "acc": float("nan")})] + lines[4:]) + "\n")
    assert cli.main(["eval", "gate", str(base), str(cand)]) == 2
    assert "record 4's acc is nan" in capsys.readouterr().err
    del record["doc_hash"]
    samples.write_text("\n".join(lines[:3] + [json.dumps(record)] + lines[4:]) + "\n")
    assert cli.main(["eval", "gate", str(base), str(cand)]) == 2
    assert "has no doc_hash" in capsys.readouterr().err
    for flag in ("--max-drop=-0.5", "--z=-1"):
        assert cli.main(["eval", "gate", str(base), str(base), flag]) == 2
        assert "both >= 0" in capsys.readouterr().err


def test_a_table_refuses_two_runs_of_one_label(tmp_path):
    runs = [make_run(tmp_path / name, BASE, label="width") for name in ("a", "b")]
    with pytest.raises(GateInputError, match="several runs are labelled 'width'"):
        write_table(runs, tmp_path / "table")
