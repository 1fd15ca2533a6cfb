#!/bin/bash
# Fig. 6 protocol end to end (`tasksup run configs/fig6_numeric6_small.yaml`, fresh process, empty folder), an
# older commit against the working tree, alternating, two rounds (docs/scaling.md, "The protocol end to end").
#   benchmarks/fig6_end_to_end.sh 51f6639
set -euo pipefail
base_commit=${1:?usage: benchmarks/fig6_end_to_end.sh COMMIT}
root=$(cd "$(dirname "$0")/.." && pwd)
base=$(mktemp -d)
git -C "$root" worktree add -f "$base" "$base_commit" > /dev/null
trap 'git -C "$root" worktree remove --force "$base"' EXIT
for round in 1 2; do
  for side in base new; do
    dir=$([ $side = base ] && echo "$base" || echo "$root")
    out=$(mktemp -d)
    start=$(date +%s.%N)
    (cd "$dir" && PYTHONPATH="$dir/src" "$root/.venv/bin/python" -m tasksup.cli run configs/fig6_numeric6_small.yaml \
      --out "$out/run" --no-progress > /dev/null)
    echo "$side ($([ $side = base ] && echo "$base_commit" || echo "working tree")) round $round: $(echo "$(date +%s.%N) - $start" | bc) s"
    rm -rf "$out"
  done
done
