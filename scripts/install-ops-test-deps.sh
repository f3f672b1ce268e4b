#!/usr/bin/env bash
# Installs what the operations tests need (tests/operations.rs, tests/inference.rs,
# tests/interop.rs): a Prometheus server to scrape the cluster, tmux to run a terminal, and a
# Python virtual environment (.venv-ops, git-ignored) with numpy and safetensors (the independent
# forward pass) and grpcio (a stock client of `coordinator serve`); and iproute2 (`ip netns`,
# veth, bridges) for tests/netns.rs, which also needs root.
#
# Idempotent: a second run installs nothing new. CI runs it as root on a fresh Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v tmux >/dev/null || need_apt+=(tmux)
command -v ip >/dev/null || need_apt+=(iproute2)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No recommends: the prometheus package would pull in node-exporter and start services.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# Debian starts the packaged Prometheus as a service where systemd runs; the tests start their
# own on a free port, so a running one only costs memory.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

venv=.venv-ops
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  'numpy>=1.24' 'safetensors>=0.4' 'grpcio>=1.60' 'grpcio-health-checking>=1.60' 'grpcio-tools>=1.60'
"$venv/bin/python" -c 'import numpy, safetensors, grpc, grpc_health, grpc_tools; print("ops test venv ready:", numpy.__version__, grpc.__version__)'
