#!/usr/bin/env bash
# TLS on versus off, side by side: weak scaling at 2 workers over gRPC (--no-shm), the number
# docs/benchmarks.md quotes. Each round runs, in turn, 1 and 2 workers without TLS and 1 and 2
# with it (64 pairs a step per worker, the same step count), so that a noisy machine slows the
# four alike; it prints every run's training pairs/s and each round's efficiencies
# (pairs/s at 2 workers / (2 x pairs/s at 1)).
#
#   cargo build --release -p coordinator -p worker
#   bash scripts/bench-tls.sh [ROUNDS] [STEPS]      # defaults: 3 rounds, 300 steps
#
# Needs openssl (to make a throwaway CA and a certificate for 127.0.0.1) and the MNIST files in
# ../shared/datasets/mnist (or SIAMESE_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
steps=${2:-300}
data=${SIAMESE_DATA_DIR:-../shared/datasets/mnist}
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A CA and a server certificate naming 127.0.0.1.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench CA" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$work/ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -days 1 -extfile "$work/ext" -out "$work/server.pem" 2>/dev/null
export SIAMESE_TOKEN=bench-tls-token-0123456789

# One run: $1 = workers, $2 = on|off; prints the epoch's training pairs/s.
run() {
  local workers=$1 tls=$2 out="$work/run-$1-$2.json" addr="$work/addr"
  local batch=$((64 * workers))
  local coordinator_tls=() worker_tls=() scheme=http
  if [[ $tls == on ]]; then
    coordinator_tls=(--tls-cert "$work/server.pem" --tls-key "$work/server.key")
    worker_tls=(--tls-ca "$work/ca.pem")
    scheme=https
  fi
  rm -f "$addr" "$out" "${out%.json}.safetensors"
  "$bin/coordinator" --quiet --dataset mnist --data-dir "$data" --workers "$workers" --no-spawn \
    --no-shm --threads 1 --batch-size "$batch" --epochs 1 --train-subset $((batch * steps)) \
    --val-pairs 100 --test-pairs 100 --address-file "$addr" --out "$out" \
    "${coordinator_tls[@]}" &
  local coordinator=$!
  while [[ ! -s $addr ]]; do sleep 0.05; done
  local pids=()
  for _ in $(seq "$workers"); do
    RUST_LOG=warn "$bin/worker" --coordinator "$scheme://$(cat "$addr")" --threads 1 \
      --data-dir "$data" "${worker_tls[@]}" &
    pids+=($!)
  done
  wait "$coordinator"
  wait "${pids[@]}"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["epochs"][0]["pairs_per_s"])' "$out"
}

printf 'round  tls  1 worker pairs/s  2 workers pairs/s  weak scaling\n'
for round in $(seq "$rounds"); do
  for tls in off on; do
    one=$(run 1 "$tls")
    two=$(run 2 "$tls")
    python3 -c 'import sys; r,t,a,b=sys.argv[1:]; a,b=float(a),float(b); print(f"{r:>5}  {t:>3}  {a:16.0f}  {b:17.0f}  {100*b/(2*a):11.1f}%")' \
      "$round" "$tls" "$one" "$two"
  done
done
