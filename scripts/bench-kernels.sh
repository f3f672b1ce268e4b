#!/usr/bin/env bash
# The AVX-512 kernels against the AVX2 kernels on this CPU, side by side (issue 13): each round
# runs, for both paths in turn (the order alternates between rounds, so a noisy machine slows
# both alike), a one-thread MNIST epoch (`--workers 0 --threads 1`) and the scoring of the
# 10,000 test pairs on 2 threads (`coordinator bench test-time`, median of 5 passes, on the
# first round's AVX2 weights). SIAMESE_KERNELS picks the path. Prints one line per path and
# round, then the medians and the per-round ratios (AVX2 time / AVX-512 time, so above 1 means
# AVX-512 is faster), and checks that both paths trained bit-identical weights in every round.
#
#   bash scripts/bench-kernels.sh [ROUNDS]     # default 5; needs target/release/coordinator
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
data=${SIAMESE_DATA_DIR:-../shared/datasets/mnist}
bin=target/release/coordinator
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

grep -qw avx512f /proc/cpuinfo || { echo "this CPU has no AVX-512" >&2; exit 1; }
printf 'round  kernels  epoch s (1 thread)  test pairs s (2 threads)  weights sha256 (tensors)\n'
for round in $(seq "$rounds"); do
  if (( round % 2 )); then order="avx2 avx512"; else order="avx512 avx2"; fi
  for k in $order; do
    SIAMESE_KERNELS=$k "$bin" --dataset mnist --data-dir "$data" --workers 0 --threads 1 \
      --epochs 1 --val-pairs 1000 --out "$work/epoch-$k-$round.json" -q >/dev/null 2>&1
    [[ -f "$work/weights.safetensors" ]] ||
      cp "$work/epoch-$k-$round.safetensors" "$work/weights.safetensors"
    SIAMESE_KERNELS=$k "$bin" bench test-time --dataset mnist --data-dir "$data" \
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
python3 - "$work/lines.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for rnd, k, epoch, test, sha in rows:
    by.setdefault(rnd, {})[k] = (float(epoch), float(test), sha)
for i, name in [(0, "epoch s (1 thread)"), (1, "test pairs s (2 threads)")]:
    med = {k: statistics.median(r[k][i] for r in by.values()) for k in ("avx2", "avx512")}
    ratios = [r["avx2"][i] / r["avx512"][i] for r in by.values()]
    print(f"{name}: median avx2 {med['avx2']:.3f}, avx512 {med['avx512']:.3f}, "
          f"ratio of medians {med['avx2'] / med['avx512']:.3f}; per-round avx2/avx512 "
          + " ".join(f"{x:.3f}" for x in ratios))
same = all(r["avx2"][2] == r["avx512"][2] for r in by.values())
print("trained weights bit-identical on both paths in every round:", "yes" if same else "NO")
PY
