#!/usr/bin/env bash
# A population of 8 CartPole agents vs 8 sequential single runs (docs/populations.md).
# Usage: benchmarks/population.sh [OUT_DIR] [STEPS]; then read OUT_DIR/*/summary.json.
set -euo pipefail
out=${1:-/tmp/population-bench}; steps=${2:-50000}
ppokit=${PPOKIT:-ppokit}
common=(--total-steps "$steps" --quiet --log-every 0 --set eval_episodes=0 --set eval.every_steps=0)
rm -rf "$out"; mkdir -p "$out"
for rep in 1 2; do
  start=$(date +%s.%N); $ppokit train CartPole-v1 --seeds 0-7 --run-dir "$out/pop$rep" "${common[@]}" > /dev/null
  echo "population rep $rep: $(echo "$(date +%s.%N) - $start" | bc) s"
  start=$(date +%s.%N)
  for seed in 0 1 2 3 4 5 6 7; do
    $ppokit train CartPole-v1 --seed "$seed" --run-dir "$out/seq$rep-$seed" "${common[@]}" > /dev/null
  done
  echo "sequential rep $rep: $(echo "$(date +%s.%N) - $start" | bc) s"
done
