#!/usr/bin/env bash
# CI's end-to-end run of the whole recipe at smoke settings (recipes/tiny/smoke.yaml; 4 min 17 s on 2 AMD cores):
# it is killed (SIGTERM, as a preempted job would be) once distillation has written its first checkpoint, and
# rerun; the rerun must resume distillation (not restart it) and finish every stage, and a third run must skip
# them all. (Background jobs of a script ignore SIGINT, so Ctrl-C is not what a script can send.)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
RECIPE=recipes/tiny/smoke.yaml
WORK=work/tiny-smoke
LOGS=$(mktemp -d)
rm -rf "$WORK"

minitron run "$RECIPE" >"$LOGS/first.log" 2>&1 &
pid=$!
for _ in $(seq 3000); do  # up to 10 minutes for the stages before distillation
  [ -f "$WORK/distilled/state/train_state.pt" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if ! kill -TERM "$pid" 2>/dev/null; then
  tail -20 "$LOGS/first.log"; echo "smoke: the run ended before distillation wrote a checkpoint" >&2; exit 1
fi
if wait "$pid"; then echo "smoke: the interrupted run exited 0" >&2; exit 1; fi
echo "smoke: killed during distillation, after step $(grep -c '"train"' "$WORK/distilled/metrics.jsonl")"

minitron run "$RECIPE" 2>&1 | tee "$LOGS/second.log" | grep -E "^[a-z0-9-]+ +(run|resume|skip)"
grep -qE "^distill +resume" "$LOGS/second.log" || { echo "smoke: distillation did not resume" >&2; exit 1; }
python - "$WORK/distilled/metrics.jsonl" <<'PY'
import json, sys
steps = [r["step"] for r in map(json.loads, open(sys.argv[1])) if r["split"] == "train"]
assert steps.count(1) == 1 and steps[-1] == max(steps), f"distillation restarted: train steps {steps}"
print(f"smoke: distillation resumed: {len(steps)} train records, step 1 logged once, last step {steps[-1]}")
PY
minitron run "$RECIPE" 2>&1 | tee "$LOGS/third.log" | grep -E "^[a-z0-9-]+ +(run|resume|skip)" | grep -v skip \
  && { echo "smoke: a third run redid work" >&2; exit 1; }
test -s results/tiny-smoke/findings.md
echo "smoke: every stage ran, resumed and then skipped; findings in results/tiny-smoke/findings.md"
