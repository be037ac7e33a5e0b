#!/usr/bin/env bash
# A real Slurm cluster on this machine, for tests/slurm and for trying `vidact launch slurm`
# without a cluster: one machine, two Slurm nodes (vidact-n1, vidact-n2: one slurmd each, both
# with all of this machine's CPUs, NodeAddr 127.0.0.1), so multi-node jobs (srun over 2 nodes,
# rendezvous on the first node) run for real.
#
#   bash scripts/slurm_local.sh start    install (Debian packages) and start munged, slurmctld,
#                                        two slurmd when no cluster answers; idempotent
#   bash scripts/slurm_local.sh stop     stop only the daemons this script started (by pid)
#   bash scripts/slurm_local.sh status   exit 0 when a cluster answers (sinfo)
#
# When a Slurm cluster already answers (a real one, or one started earlier), `start` leaves it
# alone. The settings are the ones measured to work here (docs/slurm.md, DESIGN.md): linuxproc
# process tracking, no task plugin, cons_tres selection, state/spool/logs under $VIDACT_SLURM_DIR.
# Daemons run as root, as in a container; munged runs as user munge. The CPUs are counted twice
# (once per node): jobs on both nodes share the cores.
set -euo pipefail

STATE="${VIDACT_SLURM_DIR:-/var/tmp/vidact-slurm}"
NODES=(vidact-n1 vidact-n2)
CONF=/etc/slurm/slurm.conf
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

log() { echo "[slurm_local] $*"; }

cluster_up() { timeout 10 sinfo -h >/dev/null 2>&1; }

node_ready() {
    # Every node accepts jobs: idle, mixed or allocated (not down/drained/unknown).
    local states st
    states="$(timeout 10 sinfo -h -N -o '%T' 2>/dev/null)" || return 1
    [ -n "$states" ] || return 1
    for st in $states; do
        case "$st" in idle*|mix*|alloc*|completing*) ;; *) return 1 ;; esac
    done
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

write_conf() {
    local host cpus mem
    host="$(hostname -s)"
    cpus="$(nproc)"
    mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
    $SUDO mkdir -p "$STATE"/{ctld,log} /etc/slurm
    $SUDO tee "$CONF" >/dev/null <<EOF
# Written by vidact scripts/slurm_local.sh: a one-node test cluster.
ClusterName=vidact-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool-%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
NodeName=${NODES[0]} NodeHostname=$host NodeAddr=127.0.0.1 Port=17001 CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=${NODES[1]} NodeHostname=$host NodeAddr=127.0.0.1 Port=17002 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=${NODES[0]},${NODES[1]} Default=YES MaxTime=INFINITE State=UP
EOF
    for node in "${NODES[@]}"; do $SUDO mkdir -p "$STATE/spool-$node"; done
    echo "$CONF" | $SUDO tee "$STATE/wrote-conf" >/dev/null
}

start() {
    if cluster_up; then
        log "a Slurm cluster already answers; leaving it alone"
        sinfo
        return 0
    fi
    install_packages
    $SUDO mkdir -p "$STATE"
    if [ ! -f "$CONF" ] || [ -f "$STATE/wrote-conf" ]; then
        write_conf
    else
        log "using the existing $CONF"
    fi
    if ! (munge -n | unmunge) >/dev/null 2>&1; then
        log "starting munged"
        $SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
        $SUDO chown munge:munge /run/munge /var/log/munge /var/lib/munge
        $SUDO runuser -u munge -- /usr/sbin/munged
        for _ in $(seq 50); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.1; done
        # munged daemonizes: its pid file names the daemon, not the process we launched.
        $SUDO cp /run/munge/munged.pid "$STATE/munged.started"
    fi
    if ! pgrep -x slurmctld >/dev/null; then
        log "starting slurmctld"
        $SUDO /usr/sbin/slurmctld
        for _ in $(seq 100); do [ -s "$STATE/slurmctld.pid" ] && break; sleep 0.1; done
        cp "$STATE/slurmctld.pid" "$STATE/slurmctld.started" 2>/dev/null || true
    fi
    if ! pgrep -x slurmd >/dev/null; then
        for node in "${NODES[@]}"; do  # one slurmd per Slurm node (-N), on its own port
            log "starting slurmd for $node"
            $SUDO /usr/sbin/slurmd -N "$node"
            for _ in $(seq 100); do [ -s "$STATE/slurmd-$node.pid" ] && break; sleep 0.1; done
            cp "$STATE/slurmd-$node.pid" "$STATE/slurmd-$node.started" 2>/dev/null || true
        done
    fi
    for _ in $(seq 60); do node_ready && break; sleep 0.5; done
    if ! node_ready; then
        # A node left down by an earlier unclean stop.
        $SUDO scontrol update nodename="$(IFS=,; echo "${NODES[*]}")" state=resume >/dev/null 2>&1 || true
        for _ in $(seq 20); do node_ready && break; sleep 0.5; done
    fi
    if node_ready; then
        log "cluster up:"; sinfo
    else
        log "the cluster did not come up; logs in $STATE/log"; sinfo || true
        return 1
    fi
}

stop_pidfile() {  # stop_pidfile NAME [PROGRAM]: kill the pid recorded for NAME, if it still runs PROGRAM
    local file="$STATE/$1.started" pid
    [ -e "$file" ] || return 0
    pid="$(cat "$file")"
    # Under load a daemon may write its pid file after start() stopped waiting for it: read it now.
    [ -n "$pid" ] || pid="$(cat "$STATE/$1.pid" 2>/dev/null)" || true
    if [ "$(ps -p "$pid" -o comm= 2>/dev/null)" = "${2:-$1}" ]; then
        log "stopping $1 (pid $pid)"
        $SUDO kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    $SUDO rm -f "$file"
}

stop() {
    for node in "${NODES[@]}"; do stop_pidfile "slurmd-$node" slurmd; done
    stop_pidfile slurmd  # written by the earlier one-node version of this script
    stop_pidfile slurmctld
    stop_pidfile munged
    if [ -f "$STATE/wrote-conf" ]; then
        $SUDO rm -f "$CONF" "$STATE/wrote-conf"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) cluster_up && sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
