#!/usr/bin/env bash
# The whole GPU check, in one call on the H200 machine (no Rust toolchain there): run
# `bash scripts/gpu-pack.sh` here first, then on the GPU machine, carrying .gpu/:
#
#   bash scripts/gpu-check.sh
#
# Trains one MNIST epoch with a CUDA worker, again with --aggregation nccl, and on the CPU for
# comparison; runs the NCCL module's GPU tests; prints one table at the end. A step that fails is
# reported and the rest still run, since GPU time is too scarce to stop at the first failure.
# Logs and results JSON go to $OUT (the device tool's folder that comes back), else .gpu/out.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
pack=$PWD/.gpu
out=${OUT:-$pack/out}
step_timeout=${GPU_CHECK_TIMEOUT:-150}
mkdir -p "$out"
[ -d "$pack" ] || { echo "gpu-check: $pack is missing: run scripts/gpu-pack.sh and carry .gpu" >&2; exit 1; }

echo "== nvidia-smi"
nvidia-smi || echo "gpu-check: nvidia-smi failed"

echo "== libraries"
nv=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
libs=()
for d in "$nv/cu13/lib" "$nv/nccl/lib"; do
  if [ -d "$d" ]; then
    libs+=("$d")
    ls "$d"
  else
    echo "gpu-check: $d does not exist; CUDA or NCCL libraries may not load"
  fi
done
libs+=(${LD_LIBRARY_PATH:+"$LD_LIBRARY_PATH"})
LD_LIBRARY_PATH=$(IFS=:; echo "${libs[*]}")
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

echo "== binaries"
bin=$(mktemp -d)
for f in "$pack"/*.xz; do
  name=$(basename "$f" .xz)
  if command -v xz >/dev/null; then
    xz -dc "$f" > "$bin/$name"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$bin/$name"
  fi
  chmod +x "$bin/$name"
  echo "$name: $(ldd "$bin/$name" | grep -E 'not found|libcuda|libnccl|libcublas\.' | tr -s ' \t' ' ' | paste -sd, -)"
done

# run NAME CMD...: runs CMD under a timeout, logging to $out/NAME.log; records NAME's outcome.
declare -A status
run() {
  local name=$1
  shift
  echo "== $name: $*"
  local start=$SECONDS
  timeout -k 10 "$step_timeout" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$out/$name.log"
  if [ $rc -eq 0 ]; then
    status[$name]="ok"
  elif [ $rc -eq 124 ]; then
    status[$name]="timed out after ${step_timeout} s"
  elif grep -q "unexpected argument '--aggregation'" "$out/$name.log"; then
    status[$name]="failed: --aggregation not implemented (flag refused)"
  else
    status[$name]="failed (exit $rc)"
  fi
  echo "-- $name: ${status[$name]} ($((SECONDS - start)) s)"
}

# The coordinator fails at once when a local worker dies before joining (say, it cannot open
# the GPU); --join-timeout only bounds a slow start. GPU_CHECK_ARGS adds flags to every training run,
# e.g. "--train-subset 2000 --test-pairs 500" for a dry run.
# shellcheck disable=SC2206 # GPU_CHECK_ARGS is a list of flags: split on purpose
train=("$bin/coordinator" --workers 1 --join-timeout 60 --dataset mnist --epochs 1
       --data-dir "$pack/mnist" ${GPU_CHECK_ARGS:-})
run cuda "${train[@]}" --device cuda:0 --out "$out/cuda.json"
run nccl "${train[@]}" --device cuda:0 --aggregation nccl --out "$out/nccl.json"
run cpu "${train[@]}" --device cpu --threads 16 --out "$out/cpu.json"
if [ -x "$bin/common-tests" ]; then
  run nccl-tests "$bin/common-tests" nccl:: --include-ignored --test-threads=1
fi

echo "== summary"
for name in cuda nccl cpu nccl-tests; do
  [ -n "${status[$name]:-}" ] && echo "$name	${status[$name]}"
done > "$out/status.tsv"
python3 - "$out" <<'EOF'
import json, os, sys

out = sys.argv[1]
status = dict(line.rstrip("\n").split("\t", 1) for line in open(os.path.join(out, "status.tsv")))
rows = [("run", "status", "device", "aggregation", "s/epoch", "pairs/s", "test s", "test pair acc")]
for name in ("cuda", "nccl", "cpu"):
    path = os.path.join(out, name + ".json")
    figures = ["-"] * 6
    if os.path.exists(path):
        try:
            r = json.load(open(path))
            e = r["epochs"][-1]
            figures = [r["device"], r["aggregation"], f"{e['seconds']:.2f}", f"{e['pairs_per_s']:.0f}",
                       f"{r['test']['time_s']:.3f}", f"{r['test']['pair_accuracy']:.4f}"]
        except (ValueError, KeyError, IndexError) as err:
            figures = [f"unreadable: {err!r}"] + [""] * 5
    rows.append((name, status.get(name, "not run"), *figures))
if "nccl-tests" in status:
    rows.append(("nccl-tests", status["nccl-tests"]) + ("",) * 6)
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
EOF
rm -rf "$bin"
