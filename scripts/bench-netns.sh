#!/usr/bin/env bash
# Weak scaling with workers that have their own network addresses: the coordinator and every
# worker each in a network namespace of their own, joined by a Linux bridge (10.77.0.0/24), so
# that weights and gradients cross a real TCP connection through veth devices, as between hosts.
#
# Each round runs, in turn, for every path: 1 worker at batch 64 and 2 workers at batch 128 (64
# pairs a worker, the same steps), so that a noisy machine slows them alike. The paths:
#   shm       workers started by the coordinator on 127.0.0.1, payloads in shared memory (default)
#   loopback  workers started by hand on 127.0.0.1 with --no-shm: payloads over gRPC, no veth
#   netns     coordinator and workers in separate namespaces, --no-shm: payloads over gRPC
#             through the bridge. --no-shm is needed: `ip netns exec` keeps the filesystem, so a
#             namespaced worker can map the coordinator's shared-memory file and would use it.
# It prints every run's training pairs/s and step-time split (milliseconds per step, means over
# workers), each round's weak-scaling efficiency (pairs/s at 2 / (2 x pairs/s at 1)) and the
# medians of the split over the rounds.
#
#   cargo build --release -p coordinator -p worker
#   sudo bash scripts/bench-netns.sh [--rounds R] [--steps S] [--paths "shm loopback netns"]
#                                    [--delay MS] [--rate RATE] [--keep-json DIR] [--baseline DIR]
#
# --baseline DIR also runs every path with the coordinator and worker binaries in DIR (another
# build, copied aside), in the same rounds, labelled path/base: a change measured side by side;
# the two builds swap order every round.
# --delay and --rate model a real network with netem on every namespace's interface (egress):
# --delay 0.05 adds 50 us each way (100 us round trip), --rate 10gbit caps each link; they
# apply to the netns path only. Without netem in the kernel, --rate alone uses the token bucket
# filter (tbf) instead. Needs root, iproute2 (ip, tc; netem or tbf in the kernel for --delay and
# --rate), python3 and the MNIST files in ../shared/datasets/mnist (or SIAMESE_DATA_DIR).
# Everything it creates is named snb-*; leftovers of a killed run are removed on the next start,
# and `bash scripts/bench-netns.sh --cleanup` removes them alone.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
steps=300
paths="shm loopback netns"
delay=""
rate=""
keep=""
baseline=""
cleanup_only=false
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --paths) paths=$2; shift 2 ;;
    --delay) delay=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --keep-json) keep=$2; shift 2 ;;
    --baseline) baseline=$(cd "$2" && pwd); shift 2 ;;
    --cleanup) cleanup_only=true; shift ;;
    *) echo "bench-netns.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done

data=${SIAMESE_DATA_DIR:-../shared/datasets/mnist}
bin=$PWD/target/release
net=10.77.0
bridge=snb-br
namespaces=(snb-c snb-w1 snb-w2)
port=50051

# Removes every namespace, veth and the bridge this script makes; safe to run at any time.
cleanup() {
  local ns pid
  for ns in "${namespaces[@]}"; do
    if ip netns list | grep -qw "^$ns"; then
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
    ip link del "$ns-h" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
}

if $cleanup_only; then
  cleanup
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "bench-netns.sh: needs root (network namespaces)" >&2; exit 1; }
for dir in "$bin" ${baseline:+"$baseline"}; do
  for b in coordinator worker; do
    [[ -x $dir/$b ]] || { echo "bench-netns.sh: $dir/$b missing: cargo build --release" >&2; exit 1; }
  done
done

work=$(mktemp -d)
# On any exit: this script's own background processes (by pid), then the network, then files.
on_exit() {
  local pid
  for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null || true; done
  cleanup
  rm -rf "$work"
}
trap on_exit EXIT
trap 'exit 130' INT TERM
cleanup

# The bridge in the root namespace, one namespace per process with eth0 on the bridge:
# snb-c 10.77.0.2 (coordinator), snb-wK 10.77.0.(10+K) (worker K).
ip link add "$bridge" type bridge
ip link set "$bridge" up
for ns in "${namespaces[@]}"; do
  case $ns in
    snb-c) addr=$net.2 ;;
    *) addr=$net.$((10 + ${ns#snb-w})) ;;
  esac
  ip netns add "$ns"
  ip link add "$ns-h" type veth peer name eth0 netns "$ns"
  ip link set "$ns-h" master "$bridge" up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  if [[ -n $delay || -n $rate ]]; then
    if ! ip netns exec "$ns" tc qdisc add dev eth0 root netem \
      ${delay:+delay "${delay}ms"} ${rate:+rate "$rate"} 2>/dev/null; then
      # Kernels without sch_netem may still have the token bucket filter, which caps the rate
      # (a 64 KiB burst, one TSO segment) but cannot delay.
      [[ -z $delay ]] || {
        echo "bench-netns.sh: tc netem failed: --delay needs sch_netem in the kernel (--rate alone also works with sch_tbf)" >&2
        exit 1
      }
      ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 64kb latency 50ms || {
        echo "bench-netns.sh: neither netem nor tbf could cap the rate (sch_netem, sch_tbf)" >&2
        exit 1
      }
    fi
  fi
done

# The link's own latency and bandwidth (no gRPC), for the cost model in docs/scaling.md.
ip netns exec snb-c python3 scripts/netns-link-probe.py serve "$net.2" $((port + 1)) &
probe_server=$!
echo "# link snb-w1 -> snb-c: $(ip netns exec snb-w1 python3 scripts/netns-link-probe.py probe "$net.2" $((port + 1)))"
wait "$probe_server"

export SIAMESE_TOKEN=bench-netns-token-0123456789
common=(--quiet --dataset mnist --data-dir "$data" --threads 1 --epochs 1
  --val-pairs 100 --test-pairs 100)

# One run: $1 = path, $2 = workers, $3 = label, $4 = folder of the binaries; writes
# $work/$3-$2.json.
run() {
  local path=$1 workers=$2 out="$work/$3-$2.json" addr="$work/addr" bin=$4
  local batch=$((64 * workers))
  local sized=("${common[@]}" --workers "$workers" --batch-size "$batch"
    --train-subset $((batch * steps)) --out "$out" --checkpoint "$work/ckpt.safetensors")
  rm -f "$addr" "$out" "$work/ckpt.safetensors" "$work/coordinator.err"
  case $path in
    shm)
      "$bin/coordinator" "${sized[@]}"
      return
      ;;
    loopback)
      "$bin/coordinator" "${sized[@]}" --no-spawn --no-shm --address-file "$addr" &
      ;;
    netns)
      # RUST_LOG=error: no warning that it listens beyond loopback without TLS on every run.
      RUST_LOG=error ip netns exec snb-c "$bin/coordinator" "${sized[@]}" --no-spawn --no-shm \
        --listen "$net.2:$port" --address-file "$addr" 2>"$work/coordinator.err" &
      ;;
  esac
  local coordinator=$!
  local waited=0
  while [[ ! -s $addr ]]; do
    sleep 0.05
    waited=$((waited + 1))
    ((waited < 600)) || { echo "bench-netns.sh: the $path coordinator never wrote its address" >&2; exit 1; }
  done
  local pids=() k
  for k in $(seq "$workers"); do
    local launch=()
    [[ $path == netns ]] && launch=(ip netns exec "snb-w$k")
    RUST_LOG=warn "${launch[@]}" "$bin/worker" --coordinator "http://$(cat "$addr")" \
      --threads 1 --data-dir "$data" --connect-timeout 30 &
    pids+=($!)
  done
  wait "$coordinator" || {
    echo "bench-netns.sh: the $path coordinator with $workers workers failed" >&2
    cat "$work/coordinator.err" >&2 2>/dev/null || true
    exit 1
  }
  wait "${pids[@]}"
}

# Prints one run's line: round, label, workers, pairs/s and the split in ms per step.
report() {
  python3 - "$1" "$2" "$3" "$work/$4-$3.json" <<'EOF'
import json, sys
rnd, path, workers, f = sys.argv[1:]
r = json.load(open(f))
pps = r["epochs"][0]["pairs_per_s"]
t = r["timing"]
steps = max((w["steps"] for w in t["per_worker"]), default=1) or 1
ms = lambda k: 1000 * t[k] / steps
outside = sum(t[k] for k in ("waiting_s", "transfer_s", "aggregation_s"))
share = 100 * outside / (outside + t["compute_s"]) if outside + t["compute_s"] else 0
print(f"{rnd:>5}  {path:<13}  {workers:>7}  {pps:8.0f}  {ms('compute_s'):7.2f}  {ms('waiting_s'):7.2f}"
      f"  {ms('transfer_s'):8.2f}  {ms('aggregation_s'):11.2f}  {share:6.1f}%")
EOF
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $rounds rounds of $steps steps, paths: $paths${delay:+, netem delay ${delay}ms}${rate:+, rate $rate}"
printf 'round  path           workers  pairs/s  comp ms  wait ms  trans ms  aggreg. ms  outside\n'
effs="$work/efficiency"
: >"$effs"
: >"$work/rows"
builds=("$bin")
[[ -n $baseline ]] && builds+=("$baseline")
for round in $(seq "$rounds"); do
  # The builds swap places every round: a run goes a little slower or faster for what ran just
  # before it (a 2-worker run, another build), and a fixed order would credit that to a build.
  order=("${builds[@]}")
  if ((round % 2 == 0 && ${#builds[@]} > 1)); then
    order=("${builds[1]}" "${builds[0]}")
  fi
  for path in $paths; do
    for build in "${order[@]}"; do
      label=$path
      [[ $build == "$bin" ]] || label=$path/base
      file=${label/\//-}
      for workers in 1 2; do
        run "$path" "$workers" "$file" "$build"
        report "$round" "$label" "$workers" "$file" | tee -a "$work/rows"
        if [[ -n $keep ]]; then
          mkdir -p "$keep"
          cp "$work/$file-$workers.json" "$keep/r$round-$file-$workers.json"
        fi
      done
      python3 -c 'import json,sys; a,b=(json.load(open(f))["epochs"][0]["pairs_per_s"] for f in sys.argv[3:5]); print(sys.argv[1], sys.argv[2], b/(2*a), b)' \
        "$round" "$label" "$work/$file-1.json" "$work/$file-2.json" >>"$effs"
    done
  done
done

echo
echo "weak scaling at 2 workers, per round and median; 2-worker pairs/s against shm of the same build (median of the rounds' ratios)"
python3 - "$effs" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
paths = list(dict.fromkeys(r[1] for r in rows))
by = {p: [(int(r[0]), float(r[2]), float(r[3])) for r in rows if r[1] == p] for p in paths}
for p in paths:
    effs = [e for _, e, _ in by[p]]
    line = f"{p:<13}  " + "  ".join(f"{100*e:5.1f}%" for e in effs)
    line += f"   median {100*statistics.median(effs):5.1f}%"
    # Against the shared-memory path of the same build, round by round.
    ref = "shm/base" if p.endswith("/base") else "shm"
    if ref in by and p != ref:
        rel = [b / s for (_, _, b), (_, _, s) in zip(by[p], by[ref])]
        line += f"   2 workers vs {ref} {statistics.median(rel):.3f}"
    print(line)
EOF

echo
echo "medians of the rounds, per path and workers: pairs/s and ms per step (the split is steadier than pairs/s on a noisy machine)"
python3 - "$work/rows" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
keys = list(dict.fromkeys((r[1], r[2]) for r in rows))
print(f"{'path':<13}  workers  pairs/s  comp ms  wait ms  trans ms  aggreg. ms")
for path, workers in keys:
    cols = list(zip(*[[float(x) for x in r[3:8]] for r in rows if (r[1], r[2]) == (path, workers)]))
    m = [statistics.median(c) for c in cols]
    print(f"{path:<13}  {workers:>7}  {m[0]:7.0f}  {m[1]:7.2f}  {m[2]:7.2f}  {m[3]:8.2f}  {m[4]:10.2f}")
EOF
