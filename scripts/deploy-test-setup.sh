#!/usr/bin/env bash
# Installs what the deployment tests (tests/deploy_*.rs) and their lints need, on Debian 12 as
# root: podman with runc, netavark, aardvark-dns (pods resolve each other by name) and
# iptables (netavark needs it), Slurm and munge, shellcheck, yamllint, and a Python venv
# (.deploy-venv/) with kubernetes-validate and a stock grpc.health.v1 client; makes this host's
# short name resolve (Slurm's node). Idempotent; .ci/run calls it before the tests.
#
#   bash scripts/deploy-test-setup.sh
#
# Nothing here is started: the tests start and stop their own Slurm daemons and pods. Podman is
# configured through deploy/container/containers.conf (CONTAINERS_CONF, set by the scripts that
# call podman), not through /etc, so other podman users on the machine are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  podman runc catatonit netavark aardvark-dns iptables
  slurm-wlm munge
  shellcheck yamllint
  python3-venv
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deploy-test-setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No systemd here: the packages' postinst scripts cannot start daemons, which is what we want.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Slurm's node is this host by its short name, which jobs also use as the coordinator's address.
node=$(hostname -s)
if ! getent hosts "$node" >/dev/null; then
  echo "deploy-test-setup: adding $node to /etc/hosts" >&2
  echo "127.0.0.1 $node" >>/etc/hosts
fi

# Pods find each other by name only with netavark; podman keeps the backend it first ran with.
backend=$(CONTAINERS_CONF=$PWD/deploy/container/containers.conf podman info --format '{{.Host.NetworkBackend}}')
if [[ $backend != netavark ]]; then
  echo "deploy-test-setup: podman uses the $backend network backend; after 'podman system reset -f'" \
    "(which removes all containers, images and volumes) it takes netavark" >&2
  exit 1
fi

# Versions pinned so that validation and the health client do not change under CI.
venv=.deploy-venv
want="kubernetes-validate==1.37.0 grpcio==1.76.0 grpcio-health-checking==1.76.0"
stamp=$venv/.installed
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  [[ -x $venv/bin/pip ]] || python3 -m venv "$venv"
  # shellcheck disable=SC2086 # $want is a list of requirement specifiers
  "$venv/bin/pip" install -q --disable-pip-version-check $want
  echo "$want" >"$stamp"
fi
echo "deploy-test-setup: ready (podman, slurm, shellcheck, yamllint, $venv)" >&2
