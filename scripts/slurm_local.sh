#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for tests/slurm and for trying `vidact launch
# slurm` without a cluster.
#
#   bash scripts/slurm_local.sh start    install (Debian packages) and start munged, slurmctld,
#                                        slurmd when no cluster answers; idempotent
#   bash scripts/slurm_local.sh stop     stop only the daemons this script started (by pid)
#   bash scripts/slurm_local.sh status   exit 0 when a cluster answers (sinfo)
#
# When a Slurm cluster already answers (a real one, or one started earlier), `start` leaves it
# alone. The settings are the ones measured to work here (docs/slurm.md, DESIGN.md): linuxproc
# process tracking, no task plugin, cons_tres selection, one node with all of this machine's CPUs,
# state/spool/logs under $VIDACT_SLURM_DIR. Daemons run as root, as in a container; munged runs
# as user munge.
set -euo pipefail

STATE="${VIDACT_SLURM_DIR:-/var/tmp/vidact-slurm}"
CONF=/etc/slurm/slurm.conf
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

log() { echo "[slurm_local] $*"; }

cluster_up() { timeout 10 sinfo -h >/dev/null 2>&1; }

node_ready() {
    # The node accepts jobs: idle, mixed or allocated (not down/drained/unknown).
    local st
    st="$(timeout 10 sinfo -h -N -o '%T' 2>/dev/null | head -1)"
    case "$st" in idle*|mix*|alloc*|completing*) return 0 ;; *) return 1 ;; esac
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
    $SUDO mkdir -p "$STATE"/{ctld,d,log} /etc/slurm
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
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
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
        log "starting slurmd"
        $SUDO /usr/sbin/slurmd
        for _ in $(seq 100); do [ -s "$STATE/slurmd.pid" ] && break; sleep 0.1; done
        cp "$STATE/slurmd.pid" "$STATE/slurmd.started" 2>/dev/null || true
    fi
    for _ in $(seq 60); do node_ready && break; sleep 0.5; done
    if ! node_ready; then
        # A node left down by an earlier unclean stop.
        $SUDO scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        for _ in $(seq 20); do node_ready && break; sleep 0.5; done
    fi
    if node_ready; then
        log "cluster up:"; sinfo
    else
        log "the cluster did not come up; logs in $STATE/log"; sinfo || true
        return 1
    fi
}

stop_pidfile() {  # stop_pidfile NAME: kill the pid this script recorded for NAME, if still NAME
    local file="$STATE/$1.started" pid
    [ -s "$file" ] || return 0
    pid="$(cat "$file")"
    if [ "$(ps -p "$pid" -o comm= 2>/dev/null)" = "$1" ]; then
        log "stopping $1 (pid $pid)"
        $SUDO kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    $SUDO rm -f "$file"
}

stop() {
    stop_pidfile slurmd
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
