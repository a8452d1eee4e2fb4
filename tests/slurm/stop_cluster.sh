#!/usr/bin/env bash
# Stop the single-node SLURM cluster that tests/slurm/start_cluster.sh started: slurmd, slurmctld,
# slurmdbd, the private MariaDB, munged (each through the pid file the start script uses; a daemon
# that is not running is skipped). --purge also deletes the cluster's state (job and accounting
# database, spool, logs: $SKD_SLURM_STATE) so that the next start is a fresh cluster; the packages
# and the configuration files in /etc stay. Run as root.
set -euo pipefail

STATE=${SKD_SLURM_STATE:-/var/lib/skd-slurm}
PURGE=0
case ${1:-} in
    --purge) PURGE=1 ;;
    "") ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

stop_pid() {  # stop_pid NAME PIDFILE: TERM the process, wait up to 20 s, then KILL
    local pid
    # only a live process called NAME (a stale pid file may name a reused pid)
    [ -f "$2" ] && pid=$(cat "$2") && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 0
    echo "stop_cluster: stopping $1 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    echo "stop_cluster: $1 still runs after 20 s, killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
}

stop_pid slurmd "$STATE/slurmd.pid"
stop_pid slurmctld "$STATE/slurmctld.pid"
stop_pid slurmdbd "$STATE/slurmdbd.pid"
stop_pid mariadbd "$STATE/mariadbd.pid"
stop_pid munged /run/munge/munged.pid
if [ "$PURGE" = 1 ]; then
    echo "stop_cluster: deleting $STATE"
    rm -rf "$STATE"
fi
