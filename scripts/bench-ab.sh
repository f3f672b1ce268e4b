#!/usr/bin/env bash
# Builds compared side by side: each round runs, for every build in turn, weak scaling at 1 and
# 2 workers (`coordinator bench scaling --workers 1,2 --mode weak`) and a one-thread MNIST epoch
# in one process, so that a noisy machine slows every build alike. Prints one line per build and
# round; docs/benchmarks.md quotes the medians and the per-round ratios.
#
#   bash scripts/bench-ab.sh [ROUNDS] DIR...   # each DIR holds a build's coordinator and worker
#
# For instance, the last commit against the current tree:
#   git worktree add /tmp/base HEAD && cargo build --release --manifest-path /tmp/base/Cargo.toml
#   bash scripts/bench-ab.sh 5 /tmp/base/target/release target/release
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:?rounds}
shift
data=${SIAMESE_DATA_DIR:-../shared/datasets/mnist}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf 'round  build  1 worker pairs/s  2 workers pairs/s  weak scaling  epoch s (1 thread)\n'
for round in $(seq "$rounds"); do
  for dir in "$@"; do
    "$dir/coordinator" bench scaling --dataset mnist --data-dir "$data" --workers 1,2 \
      --mode weak --steps 200 --warmup 10 --repeats 1 --out "$work/scaling.json" >/dev/null 2>&1
    # A fresh run each time: the last round's checkpoint would be refused (or, with an old
    # build, replaced) otherwise.
    rm -f "$work/epoch.safetensors"
    "$dir/coordinator" --dataset mnist --data-dir "$data" --workers 0 --threads 1 --epochs 1 \
      --val-pairs 1000 --test-pairs 1000 --out "$work/epoch.json" >/dev/null 2>&1
    python3 - "$round" "$dir" "$work/scaling.json" "$work/epoch.json" <<'EOF'
import json, sys
rnd, build, scaling, epoch = sys.argv[1:]
runs = {r["workers"]: r for r in json.load(open(scaling))["runs"]}
seconds = json.load(open(epoch))["epochs"][0]["seconds"]
one, two = runs[1]["pairs_per_s"], runs[2]["pairs_per_s"]
print(f"{rnd:>5}  {build}  {one:16.0f}  {two:17.0f}  {100 * two / (2 * one):11.1f}%  {seconds:18.2f}")
EOF
  done
done
