#!/usr/bin/env bash
# Packs everything scripts/gpu-check.sh needs into .gpu/ (git-ignored), on this GPU-less machine:
# the H200 machine has no Rust toolchain and GPU time is scarce, so all building happens here.
#
#   bash scripts/gpu-pack.sh          # then, on the GPU machine (carry .gpu): bash scripts/gpu-check.sh
#
# Builds coordinator and worker with --features nccl (CUDA + NCCL, see ../shared/gpu/README.md)
# and the siamese-common unit tests, whose ignored nccl:: tests need a GPU; strips and
# xz-compresses them (~45 MB each to a few MB), and copies MNIST's four .gz files.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared=${SIAMESE_SHARED:-$root/../shared}
mnist=$shared/datasets/mnist

# Assigned first: `eval "$(...)"` would hide the setup script's failure from `set -e`.
cuda_env=$(bash "$shared/gpu/setup-cuda-build.sh" "${CUDA_PIP_DIR:-$HOME/.cache/cuda13-pip}")
eval "$cuda_env"
# A target dir of its own: its release/ holds the CUDA binaries this packs, and target/release
# keeps the CPU ones.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-cuda}
# candle-kernels compiles its CUDA sources on half the cores unless told otherwise.
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}

cargo build --release --features nccl -p coordinator -p worker
# The test binary's path carries a hash: ask cargo for it.
tests=$(cargo test --release --features nccl -p siamese-common --lib --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "siamese_common":
        print(m["executable"])')
[ -x "$tests" ] || { echo "gpu-pack: no siamese-common test binary found" >&2; exit 1; }

rm -rf .gpu
mkdir -p .gpu/mnist
for pair in "coordinator:$CARGO_TARGET_DIR/release/coordinator" "worker:$CARGO_TARGET_DIR/release/worker" \
            "common-tests:$tests"; do
  name=${pair%%:*}
  strip -o ".gpu/$name" "${pair#*:}"
  xz -T2 -6 ".gpu/$name" # leaves .gpu/$name.xz
done
cp "$mnist"/*-ubyte.gz .gpu/mnist/
ls -la .gpu .gpu/mnist
du -sh .gpu
