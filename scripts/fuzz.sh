#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for RUNS executions each (default 1,000,000),
# growing its corpus in fuzz/corpus/<target>/; a crash stops the script and leaves its input
# in fuzz/artifacts/<target>/. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`); CI does not fuzz, it replays the corpora (tests/fuzz_replay.rs).
#
#   bash scripts/fuzz.sh                   # all targets
#   RUNS=100000 bash scripts/fuzz.sh idx   # one target, fewer runs
#
# Each target's last libFuzzer line ("Done N runs in S second(s)") is what docs/security.md
# quotes.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
runs=${RUNS:-1000000}
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo +nightly fuzz list)
# Debug assertions on: an overflow the release build would wrap is a crash here.
cargo +nightly fuzz build -O --debug-assertions
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "fuzz: $t, $runs runs" >&2
  "target/x86_64-unknown-linux-gnu/release/$t" -runs="$runs" -max_len=8192 -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$t/" "corpus/$t" 2>&1 |
    grep -E '^(Done|stat::|==|SUMMARY|artifact_prefix)|panicked|crash-|timeout-|oom-' || true
  # A crash, timeout or memory blow-up leaves its input behind.
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "fuzz: $t found a failing input: $(ls "artifacts/$t")" >&2
    exit 1
  fi
done
