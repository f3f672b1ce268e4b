#!/usr/bin/env bash
# A throw-away single-node Slurm cluster on this machine, for testing deploy/slurm/*.sbatch
# (Debian 12's slurm-wlm and munge, run as root, no systemd). Everything it starts is its own:
# a private munged (own key and socket), slurmctld and slurmd on their own ports, with the
# configuration, state and logs under one folder, so a Slurm or munge already on the machine is
# left alone. Clients reach it through SLURM_CONF.
#
#   bash deploy/slurm/local-cluster.sh up      # start; prints `export SLURM_CONF=...`
#   bash deploy/slurm/local-cluster.sh down    # stop what `up` started, keep the folder
#   bash deploy/slurm/local-cluster.sh clean   # down, then remove the folder
#
# Env: SIAMESE_SLURM_DIR (default /tmp/siamese-slurm), SIAMESE_SLURM_PORT (slurmctld's port,
# default 16817; slurmd takes the next one), SIAMESE_SLURM_CPUS (CPUs the node advertises,
# default 8: more than a 2-core machine has, so that 3 workers and the batch step fit).
# The node is `hostname -s`, which must resolve (jobs use it as the coordinator's address).
set -euo pipefail

base=${SIAMESE_SLURM_DIR:-/tmp/siamese-slurm}
port=${SIAMESE_SLURM_PORT:-16817}
cpus=${SIAMESE_SLURM_CPUS:-8}
node=$(hostname -s)
conf=$base/slurm.conf
# Every Slurm command here, daemons included, reads this configuration and no other.
export SLURM_CONF=$conf

log() { echo "[local-cluster] $*" >&2; }

# running NAME PIDFILE: the pid file names a live process called NAME.
running() {
  local pid
  [[ -s $2 ]] || return 1
  pid=$(<"$2")
  [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$1" ]]
}

stop() { # NAME PIDFILE
  local pid
  running "$1" "$2" || { rm -f "$2"; return 0; }
  pid=$(<"$2")
  log "stopping $1 ($pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    [[ -d /proc/$pid ]] || break
    sleep 0.1
  done
  if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$2"
}

require() {
  local missing=()
  for c in munged slurmctld slurmd sbatch scontrol; do
    command -v "$c" >/dev/null || missing+=("$c")
  done
  if ((${#missing[@]})); then
    log "missing ${missing[*]}: run scripts/deploy-test-setup.sh (Debian's slurm-wlm and munge)"
    exit 1
  fi
  [[ $(id -u) == 0 ]] || { log "must run as root (slurmd runs jobs as their users)"; exit 1; }
  getent hosts "$node" >/dev/null || { log "$node does not resolve: add it to /etc/hosts"; exit 1; }
}

start_munge() {
  mkdir -p "$base/munge"
  chmod 700 "$base/munge"
  [[ -s $base/munge/munge.key ]] || dd if=/dev/urandom of="$base/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$base/munge/munge.key"
  running munged "$base/munge/munged.pid" && return
  # --force: munged refuses a root-owned key and folder by default; they are private to root here.
  munged --force --key-file="$base/munge/munge.key" --socket="$base/munge/munge.socket" \
    --pid-file="$base/munge/munged.pid" --log-file="$base/log/munged.log" \
    --seed-file="$base/munge/munged.seed"
  for _ in $(seq 50); do
    running munged "$base/munge/munged.pid" && return
    sleep 0.1
  done
  log "munged did not start: see $base/log/munged.log"
  exit 1
}

write_conf() {
  local mem
  # Megabytes, as slurmd counts them; a node that claims more than it has is refused.
  mem=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
  cat >"$conf" <<EOF
# Written by deploy/slurm/local-cluster.sh.
ClusterName=siamese-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long before it may start again (default 120 s).
AuthInfo=socket=$base/munge/munge.socket,cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Look at pending jobs every second or two rather than every minute: a requeued job starts
# as soon as it may.
SchedulerParameters=sched_interval=2,bf_interval=1
# The node advertises more CPUs than it has (see SIAMESE_SLURM_CPUS).
SlurmdParameters=config_overrides
ReturnToService=2
# One GPU on paper only (its "device" is /dev/null: Slurm wants a file for a GPU), so that
# sbatch --test-only accepts the GPU batch script; no job here runs with it.
GresTypes=gpu
StateSaveLocation=$base/state
SlurmdSpoolDir=$base/spool
SlurmctldPidFile=$base/run/slurmctld.pid
SlurmdPidFile=$base/run/slurmd.pid
SlurmctldLogFile=$base/log/slurmctld.log
SlurmdLogFile=$base/log/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=${mem:-1000} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  cat >"$base/gres.conf" <<EOF
NodeName=$node Name=gpu File=/dev/null
EOF
}

cmd_up() {
  require
  mkdir -p "$base"/{state,spool,log,run}
  start_munge
  write_conf
  if ! running slurmctld "$base/run/slurmctld.pid"; then
    log "starting slurmctld on port $port"
    slurmctld -c # -c: no jobs from an earlier run
  fi
  if ! running slurmd "$base/run/slurmd.pid"; then
    log "starting slurmd"
    slurmd
  fi
  local state=""
  for _ in $(seq 120); do
    state=$(sinfo -h -n "$node" -o %t 2>/dev/null || true)
    case $state in
      idle | mix | alloc)
        log "node $node is $state"
        echo "export SLURM_CONF=$conf"
        return 0
        ;;
      down* | drain* | drng*) scontrol update NodeName="$node" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  log "node $node is not idle after 60 s (state '$state'): see $base/log/"
  exit 1
}

cmd_down() {
  stop slurmd "$base/run/slurmd.pid"
  stop slurmctld "$base/run/slurmctld.pid"
  stop munged "$base/munge/munged.pid"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  clean)
    cmd_down
    rm -rf "$base"
    ;;
  *)
    echo "usage: $0 up|down|clean" >&2
    exit 2
    ;;
esac
