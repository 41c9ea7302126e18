"""minitron/findings.py: each verdict follows from the measurements by its rule, held or not, and the folder says so."""

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from minitron import findings, findings_report, findings_runs
from minitron.stage_kinds import DISTILL, seeds_of

RUNS = ["correct", "distill", "distill-original", "distill-parallel", "distill-random-init", "distill-random-pruning",
        "train-lm-loss", "distill-depth"]


def write_run(folder, losses):
    folder.mkdir(parents=True)
    lines = [{"split": "val", "step": 8 * i, "tokens": 4096 * 8 * i, "val_loss": loss, "val_kl": 0.1}
             for i, loss in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def write_scan(folder, singles, spread, best_block, accuracy, spread_layers="1,2,5,6"):
    """An 8-layer scan: single-layer losses, the k=4 blocks, and the non-contiguous choice of 4."""
    rows = [{"method": "contiguous", "block_len": 1, "start": i, "end": i, "layers": f"{i}-{i}", "lm_loss": loss,
             "stdlib_cloze": 0.5} for i, loss in enumerate(singles)]
    for start in range(5):
        rows.append({"method": "contiguous", "block_len": 4, "start": start, "end": start + 3,
                     "layers": f"{start}-{start + 3}", "lm_loss": best_block + start, "stdlib_cloze": accuracy[start]})
    rows.append({"method": "single-layer-rank", "block_len": 4, "start": 1, "end": 6, "layers": spread_layers,
                 "lm_loss": spread, "stdlib_cloze": accuracy[-1]})
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "depth_scan.csv", index=False)
    (folder / "depth_scan.png").write_bytes(b"png")


@pytest.fixture
def folders(tmp_path):
    """Stage folders in which every claim holds; tests then break one claim at a time."""
    f = {name: tmp_path / name for name in RUNS + ["prune", "prune-depth", "bench", "eval"]}
    write_run(f["correct"], [6.0, 5.0])
    for name, losses in {"distill": [5.5, 5.0], "distill-original": [5.6, 5.4], "distill-parallel": [5.6, 5.1],
                         "distill-random-init": [7.6, 6.5], "distill-random-pruning": [6.5, 5.3],
                         "train-lm-loss": [5.5, 5.2], "distill-depth": [6.0, 5.2]}.items():
        write_run(f[name], losses)
    write_scan(f["prune-depth"], [7.0, 5.1, 5.1, 5.2, 5.1, 5.1, 5.2, 5.6], spread=5.3, best_block=5.5,
               accuracy=[0.3, 0.5, 0.5, 0.55, 0.8, 0.5])
    for name, params in (("prune", 1_280_000), ("prune-depth", 1_312_000)):
        f[name].mkdir(exist_ok=True)
        (f[name] / "minitron.json").write_text(json.dumps({"params": {"target": {"params": params}}}))
    (f["bench"] / "report").mkdir(parents=True)
    pd.DataFrame([{"label": "depth", "avg_speedup": 1.8, "avg_ideal_flops": 1.9, "avg_ideal_bytes": 1.85},
                  {"label": "width", "avg_speedup": 1.2, "avg_ideal_flops": 1.6, "avg_ideal_bytes": 1.3}]
                 ).to_csv(f["bench"] / "report" / "speedup.csv", index=False)
    write_points(f["bench"], {"teacher": (1.0, 1.1), "width": (1.3, 1.4), "depth": (1.8, 2.0)})
    (f["bench"] / "report" / "figure10.png").write_bytes(b"png")
    (f["eval"] / "table").mkdir(parents=True)
    pd.DataFrame([{"benchmark": "minitron_stdlib_cloze", "task": "minitron_stdlib_cloze"}]).to_csv(
        f["eval"] / "table" / "table.csv", index=False)
    (f["eval"] / "table" / "table.md").write_text("| table |\n")
    # 100 items: width right on 70, depth on 50 (a paired difference far beyond its noise); FP8 answers the same
    for label, right in {"width": 70, "depth": 50, "width-fp8": 70, "depth-fp8": 50}.items():
        write_eval_run(f["eval"] / label, [1.0] * right + [0.0] * (100 - right))
    return f


def write_points(bench, ranges: dict) -> None:
    """The sweep's points at two ISL/OSL pairs, each label's requests/s from its repeats' min to max."""
    pd.DataFrame([{"label": label, "isl_osl": point, "req_s_min": low, "req_s_max": high}
                  for point in ("64/16", "256/64") for label, (low, high) in ranges.items()]
                 ).to_csv(bench / "report" / "points.csv", index=False)


def write_eval_run(folder, scores):
    """An eval run folder as `minitron eval run` writes it, with per-item samples of the in-domain task."""
    task, metric = findings.IN_DOMAIN_TASKS[0], "acc_norm,none"
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    (folder / "minitron.json").write_text(json.dumps({"stage": "eval", "suite": "embedded",
                                                      "suite_tasks": [{"task": task, "metric": metric}]}))
    results = {"results": {task: {metric: sum(scores) / len(scores)}}, "higher_is_better": {task: {"acc_norm": True}}}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "samples" / f"{task}.jsonl").write_text("".join(
        json.dumps({"doc_hash": str(i), "prompt_hash": "p", "acc_norm": score}) + "\n" for i, score in enumerate(scores)))


RECIPE = SimpleNamespace(name="tiny", distill={"steps": 64, "global_batch": 16, "seq_len": 256}, findings={})


def test_every_claim_held_when_the_numbers_say_so(folders, tmp_path):
    out = tmp_path / "results"
    verdicts = findings_report.write_findings(folders, out, RECIPE)
    assert len(verdicts) == 12 and all(v.held for v in verdicts), [v for v in verdicts if not v.held]
    for name in ("findings.md", "findings.csv", "minitron.json", "teacher-correction.png", "evals.md",
                 "pruning-and-distillation.csv", "width-vs-depth.png", "depth-sensitivity.png", "throughput.csv"):
        assert (out / name).is_file(), name
    text = (out / "findings.md").read_text()
    # one seed: the 7 comparisons of trained students say that their seed noise is not measured
    assert ("3 held, 0 did not hold and 0 were inconclusive at this scale; 7 rest on one training seed (7 held "
            "there, 0 did not: seed noise not measured); 2 were measured without a noise estimate (2 as claimed)"
            in text) and "did not hold" not in text.split("\n", 3)[3]
    assert [v.outcome for v in verdicts if v.figure == "Figure 8"] == ["measured as claimed (no noise estimate)"] * 2
    assert sum(v.outcome == "held in one seed (seed noise not measured)" for v in verdicts) == 7
    assert (out / "width-eval-run" / "samples" / f"{findings.IN_DOMAIN_TASKS[0]}.jsonl").is_file()
    assert json.loads((out / "minitron.json").read_text())["provenance"]["git_sha"] is not None


def test_a_claim_that_fails_is_reported_as_not_held(folders, tmp_path):
    write_run(folders["distill-original"].with_name("x"), [5.6, 4.9])  # the uncorrected teacher does better
    folders["distill-original"] = folders["distill-original"].with_name("x")
    write_run(folders["train-lm-loss"].with_name("y"), [5.5, 4.8])  # LM loss beats KD
    folders["train-lm-loss"] = folders["train-lm-loss"].with_name("y")
    verdicts = findings_report.write_findings(folders, tmp_path / "results", RECIPE)
    failed = [(v.figure, v.claim) for v in verdicts if not v.held]
    assert [figure for figure, _ in failed] == ["Figure 4", "Figure 5", "Figure 6"]
    assert failed[2][1] == "distillation-based training outperforms conventional (LM loss) training"
    assert "7 rest on one training seed (4 held there, 3 did not" in (tmp_path / "results" / "findings.md").read_text()


def test_depth_rules(folders, tmp_path):
    """The ends are not the most important layers, and the non-contiguous choice keeps more accuracy."""
    import shutil

    shutil.rmtree(folders["prune-depth"])
    write_scan(folders["prune-depth"], [7.0, 5.1, 5.9, 5.2, 5.1, 5.1, 5.2, 5.6], spread=5.6, best_block=5.5,
               accuracy=[0.3, 0.5, 0.5, 0.55, 0.6, 0.9])
    (folders["prune-depth"] / "minitron.json").write_text(json.dumps({"params": {"target": {"params": 1}}}))
    verdicts = findings.depth_sensitivity(folders, tmp_path)
    assert [(v.figure, v.held) for v in verdicts] == [("Figure 8", False), ("Figure 8", False), ("Figure 9", False)]


def test_a_non_contiguous_choice_that_is_one_block_is_not_tested(folders, tmp_path):
    """When the cheapest single layers form a block, Figures 8 and 9 would compare a set with itself: not testable."""
    import shutil

    shutil.rmtree(folders["prune-depth"])
    write_scan(folders["prune-depth"], [7.0, 5.1, 5.0, 5.0, 5.0, 5.0, 5.2, 5.6], spread=5.5, best_block=5.5,
               accuracy=[0.3, 0.5, 0.5, 0.55, 0.6, 0.5], spread_layers="2-5")
    (folders["prune-depth"] / "minitron.json").write_text(json.dumps({"params": {"target": {"params": 1}}}))
    verdicts = findings.depth_sensitivity(folders, tmp_path)
    assert [(v.figure, v.held, v.testable) for v in verdicts[1:]] == [("Figure 8", None, False),
                                                                      ("Figure 9", None, False)]
    assert all("form one block (layers 2-5)" in v.measured and v.outcome == "not testable here" for v in verdicts[1:])
    assert findings_report._tally(verdicts).endswith("; 2 could not be tested here")


def test_width_must_win_at_every_point(folders, tmp_path):
    write_run(folders["distill-depth"].with_name("z"), [6.0, 4.9])  # depth ends lower
    folders["distill-depth"] = folders["distill-depth"].with_name("z")
    (verdict,) = findings.width_vs_depth(folders, tmp_path)
    assert not verdict.held and "1.28M vs 1.31M params" in verdict.measured


def test_a_difference_within_the_noise_is_inconclusive_and_an_fp8_drop_fails(folders, tmp_path):
    write_eval_run(folders["eval"] / "width", [1.0] * 52 + [0.0] * 48)  # 52 vs 50 on 100 items: noise
    write_eval_run(folders["eval"] / "width-fp8", [1.0] * 40 + [0.0] * 60)  # FP8 loses 12 of the 52
    table, fp8 = findings.evals(folders, tmp_path)
    assert table.held is None and "+2.0 ±" in table.measured
    assert fp8.held is False and "width 52.0 -> 40.0 (-12.0 ±" in fp8.measured


@pytest.mark.parametrize("width_fp8,held", [
    (70, True),  # the same answers: no drop, no noise
    (69, None),  # one item of 100 lost: -1.0 ± 1.0 points, so a drop of up to 3 is not ruled out
    (30, False),  # 40 points lost, far beyond the 2-point margin and its noise
])
def test_fp8_must_rule_out_a_drop_beyond_the_margin_to_hold(folders, tmp_path, width_fp8, held):
    """Non-inferiority, not a failure to reject: FP8 holds only when its drop stays under 2 points at 2 SE."""
    write_eval_run(folders["eval"] / "width-fp8", [1.0] * width_fp8 + [0.0] * (100 - width_fp8))
    _, fp8 = findings.evals(folders, tmp_path)
    assert fp8.held is held


def test_paired_losses_decide_with_their_standard_error(tmp_path, tokenizer):
    """Two copies of one model are inconclusive; a damaged copy loses by far more than its noise."""
    import torch
    from conftest import stdlib_texts, tiny_model
    from minitron.core.model_io import save_checkpoint

    model = tiny_model("llama", layers=2)
    save_checkpoint(model, tokenizer, tmp_path / "a")
    save_checkpoint(model, tokenizer, tmp_path / "b")
    with torch.no_grad():
        model.lm_head.weight.mul_(50)  # confidently wrong everywhere
    save_checkpoint(model, tokenizer, tmp_path / "damaged")
    (tmp_path / "data.txt").write_text("\n\n".join(stdlib_texts(6)))
    held_out = findings_runs.HeldOutLosses(str(tmp_path / "data.txt"), 32, 0, micro_batch=4, eval_batches=4)
    assert findings_runs.lower_loss(held_out, [tmp_path / "a"], [tmp_path / "b"])[1] is None
    text, held = findings_runs.lower_loss(held_out, [tmp_path / "a"], [tmp_path / "damaged"])
    assert held is True and "paired over 16 blocks" in text
    # under two seeds, one tie and one clear win is not a verdict: it shows both seeds' figures
    text, held = findings_runs.lower_loss(held_out, [tmp_path / "a"] * 2, [tmp_path / "b", tmp_path / "damaged"])
    assert held is None and "seed by seed: +0.0000 ± 0.0000, +" in text and "over 2 seeds" in text
    one_shot = findings.pruning_one_shot({"prune": tmp_path / "a", "prune-random": tmp_path / "damaged",
                                          "prune-magnitude": tmp_path / "b"}, tmp_path, held_out)
    assert [(v.claim.split(" by ")[1].split(" ranking")[0], v.held) for v in one_shot] == [
        ("random", True), ("weight magnitude", None)]  # the damaged copy loses; the identical one ties exactly
    assert "± 0.0000" in one_shot[1].measured
    assert findings.pruning_one_shot({}, tmp_path, None) == []  # without held-out blocks there is nothing to pair


def add_seeds(folders, losses: dict[str, list[list[float]]]):
    """Runs of the arms in `losses` under seeds 1, 2, ... (one curve per seed), as `minitron run` names them."""
    for name, curves in losses.items():
        for seed, curve in enumerate(curves, start=1):
            folders[f"{name}-seed{seed}"] = folders[name].with_name(f"{name}-seed{seed}")
            write_run(folders[f"{name}-seed{seed}"], curve)


def test_a_verdict_over_seeds_holds_only_when_every_seed_agrees(folders, tmp_path):
    seeds = {name: [[5.5, 5.0], [5.5, 5.05]] for name in ("distill", "distill-parallel")}
    seeds |= {"distill-random-init": [[7.6, 6.5], [7.5, 6.4]], "distill-random-pruning": [[6.5, 5.3], [6.4, 5.3]],
              "train-lm-loss": [[5.5, 5.2], [5.5, 5.3]], "distill-depth": [[6.0, 5.2], [6.0, 5.25]],
              "distill-original": [[5.6, 5.4], [5.6, 4.9]]}  # seed 2: the uncorrected teacher does better
    add_seeds(folders, seeds)
    assert [f.name for f in seeds_of(folders, DISTILL)] == ["distill", "distill-seed1", "distill-seed2"]
    recipe = SimpleNamespace(**{**vars(RECIPE), "findings": {"seeds": 3}})
    verdicts = {v.claim: v for v in findings_report.write_findings(folders, tmp_path / "results", recipe)}
    fig4 = verdicts["distilling from the corrected teacher beats distilling from the original one"]
    assert fig4.held is None and fig4.seeds == 3 and "seed by seed: +0.4000, +0.4000, -0.1500" in fig4.measured
    assert verdicts["width pruning starts from a lower loss and consistently outperforms depth pruning at the same "
                    "parameter count"].outcome == "held"
    text = (tmp_path / "results" / "findings.md").read_text()
    assert "under 3 seeds" in text and "rest on one training seed (1 held there" in text  # Table 1: first seed only
    folders["eval-seeds"] = tmp_path / "eval-seeds"  # now Table 1 over seeds too: seed 2's width student ties
    for label, right in {"width-seed1": 70, "depth-seed1": 50, "width-seed2": 51, "depth-seed2": 50}.items():
        write_eval_run(folders["eval-seeds"] / label, [1.0] * right + [0.0] * (100 - right))
    (table, _) = findings.evals(folders, tmp_path / "again")
    assert table.held is None and table.seeds == 3 and "seed by seed: +20.0 ± 4.0, +20.0 ± 4.0, +1.0 ± 1.0 points" in table.measured
    table = pd.read_csv(tmp_path / "results" / "width-vs-depth.csv").set_index("run")
    assert table["seeds"].tolist() == [3, 3] and table["final_mean"].round(4).tolist() == [5.0167, 5.2167]


def test_throughput_holds_only_beyond_the_repeats_range(folders, tmp_path):
    """Figure 10's order must hold at every point beyond the spread of the repeats; overlapping ranges with the
    right averages are inconclusive."""
    write_points(folders["bench"], {"teacher": (1.0, 1.1), "width": (1.05, 1.4), "depth": (1.8, 2.0)})
    (verdict,) = findings.throughput(folders, tmp_path)
    assert verdict.held is None and "at 0 of 2 points" in verdict.measured


def test_on_par_is_an_equivalence_test_not_a_failure_to_find_a_difference():
    """Figure 5's 'on par': the loss above the teacher-corrected-first arm, even at two standard errors, must stay
    under the margin (better is on par too); a difference that could be large is inconclusive, one clearly past
    it fails."""
    from types import SimpleNamespace

    def held_out(difference, stderr):
        return SimpleNamespace(advantage=lambda better, worse: (difference, stderr))

    cases = {(0.01, 0.01): True, (-0.2, 0.01): True, (0.01, 0.05): None, (0.2, 0.01): False}  # loss above, its SE
    for (difference, stderr), expected in cases.items():
        assert findings_runs.on_par(held_out(difference, stderr), ["p"], ["c"], margin=0.05)[1] is expected
