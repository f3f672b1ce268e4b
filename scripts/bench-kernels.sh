#!/usr/bin/env bash
# The AVX-512 kernels against the AVX2 kernels on this CPU, side by side (issue 13): each round
# runs, for both sides in turn (the order alternates between rounds, so a noisy machine slows
# both alike), a one-thread MNIST epoch (`--workers 0 --threads 1`) and the scoring of the
# 10,000 test pairs on 2 threads (`coordinator bench test-time`, median of 5 passes, on the
# first round's weights). SIAMESE_KERNELS picks the path. Prints one line per side and round,
# then the medians and the per-round ratios (first side's time / second side's, so above 1
# means the second is faster), and checks that both sides trained bit-identical weights in
# every round.
#
# With --builds OLD NEW it compares two builds instead: two coordinator binaries, each on the
# kernels it detects (sides "old" and "new").
#
#   bash scripts/bench-kernels.sh [ROUNDS]     # default 5; needs target/release/coordinator
#   bash scripts/bench-kernels.sh --builds OLD_BIN NEW_BIN [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
sides=(avx2 avx512)
declare -A bin_of=([avx2]=target/release/coordinator [avx512]=target/release/coordinator)
declare -A kernels_of=([avx2]=avx2 [avx512]=avx512)
if [[ ${1:-} == --builds ]]; then
  sides=(old new)
  bin_of=([old]=$2 [new]=$3)
  kernels_of=([old]="" [new]="")
  shift 3
fi
rounds=${1:-5}
data=${SIAMESE_DATA_DIR:-../shared/datasets/mnist}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

grep -qw avx512f /proc/cpuinfo || { echo "this CPU has no AVX-512" >&2; exit 1; }
printf 'round  side     epoch s (1 thread)  test pairs s (2 threads)  weights sha256 (tensors)\n'
for round in $(seq "$rounds"); do
  if (( round % 2 )); then order="${sides[0]} ${sides[1]}"; else order="${sides[1]} ${sides[0]}"; fi
  for k in $order; do
    bin=${bin_of[$k]}
    if [[ -n ${kernels_of[$k]} ]]; then export SIAMESE_KERNELS=${kernels_of[$k]}; else unset SIAMESE_KERNELS; fi
    "$bin" --dataset mnist --data-dir "$data" --workers 0 --threads 1 \
      --epochs 1 --val-pairs 1000 --out "$work/epoch-$k-$round.json" -q >/dev/null 2>&1
    [[ -f "$work/weights.safetensors" ]] ||
      cp "$work/epoch-$k-$round.safetensors" "$work/weights.safetensors"
    "$bin" bench test-time --dataset mnist --data-dir "$data" \
      --checkpoint "$work/weights.safetensors" --threads 2 --epochs 1 --train-subset 640 \
      --repeats 5 --out "$work/test-$k-$round.json" -q >/dev/null 2>&1
    python3 - "$round" "$k" "$work/epoch-$k-$round.json" "$work/test-$k-$round.json" \
      "$work/epoch-$k-$round.safetensors" <<'PY'
import hashlib, json, sys
rnd, k, epoch, test, weights = sys.argv[1:]
seconds = json.load(open(epoch))["epochs"][0]["seconds"]
score = next(r for r in json.load(open(test))["rows"] if r["model"] == "SN-LeNet-5")["time_s"]
# The tensors only: the checkpoint's metadata holds the run's wall-clock seconds.
raw = open(weights, "rb").read()
sha = hashlib.sha256(raw[8 + int.from_bytes(raw[:8], "little"):]).hexdigest()[:16]
print(f"{rnd:>5}  {k:<7}  {seconds:18.2f}  {score:23.3f}  {sha}")
PY
  done
done | tee "$work/lines.txt"
python3 - "$work/lines.txt" "${sides[@]}" <<'PY'
import statistics, sys
a, b = sys.argv[2:4]
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for rnd, k, epoch, test, sha in rows:
    by.setdefault(rnd, {})[k] = (float(epoch), float(test), sha)
for i, name in [(0, "epoch s (1 thread)"), (1, "test pairs s (2 threads)")]:
    med = {k: statistics.median(r[k][i] for r in by.values()) for k in (a, b)}
    ratios = [r[a][i] / r[b][i] for r in by.values()]
    print(f"{name}: median {a} {med[a]:.3f}, {b} {med[b]:.3f}, "
          f"ratio of medians {med[a] / med[b]:.3f}; per-round {a}/{b} "
          + " ".join(f"{x:.3f}" for x in ratios))
same = all(r[a][2] == r[b][2] for r in by.values())
print(f"trained weights bit-identical on both sides in every round:", "yes" if same else "NO")
PY
