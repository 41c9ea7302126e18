"""The in-memory eval backend against lm-eval's HF backend on the same model and tasks (target: <= 1.10x),
and the time of the fixture suite.

    .venv/bin/python tests/benchmarks/eval_backend_overhead.py [--model work/embedded/teacher]

Both backends are lm-eval's HFLM: one loads the folder, the other wraps a model object already in memory
(what the depth scan uses). Best of --repeats per backend, all in this one process; model loading is timed
apart from evaluation.
"""

import argparse
import os
import time

from common import best_time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from minitron.core.model_io import load_model  # noqa: E402
from minitron.evals.backends import hf_lm  # noqa: E402
from minitron.evals.run import evaluate_suite  # noqa: E402
from minitron.evals.suites import load_suite  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="work/embedded/teacher")
    parser.add_argument("--suite", default="fixtures")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    suite = load_suite(args.suite)
    start = time.perf_counter()
    from_folder = hf_lm(args.model)
    load_s = time.perf_counter() - start
    model, tokenizer = load_model(args.model)
    in_memory = hf_lm(model, tokenizer=tokenizer)
    t_folder = best_time(lambda: evaluate_suite(from_folder, suite), args.repeats)
    t_memory = best_time(lambda: evaluate_suite(in_memory, suite), args.repeats)
    print(f"suite {suite.name} ({len(suite.tasks)} tasks) on {args.model}")
    print(f"hf backend (folder)      {t_folder:7.2f} s  (+ {load_s:.2f} s to load)")
    print(f"in-memory backend        {t_memory:7.2f} s")
    print(f"in-memory / hf = {t_memory / t_folder:.3f}x  (target <= 1.10x)")


if __name__ == "__main__":
    main()
