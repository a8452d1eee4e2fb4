#!/usr/bin/env bash
# A single-node SLURM cluster on this machine for `make test-slurm`: Debian's munge, slurmctld and
# slurmd (22.05), one node (this host, its real CPUs and memory from `slurmd -C`), one partition
# `debug`, and accounting (slurmdbd on a private MariaDB) so that `sacct` answers: submitit reads
# job states from sacct, and without it a job that ends without writing its result (killed,
# cancelled, out of memory) stays UNKNOWN and job.result() waits forever.
# SKD_SLURM_ACCOUNTING=0 leaves accounting out.
#
# Run as root. Idempotent: installs the packages only when missing, creates the munge key and the
# database only when missing, rewrites the configuration only when it changes (and then restarts the
# daemons that read it), starts only the daemons that are not running. Ends when `sinfo` shows the
# node usable (exit 0), or prints the daemons' logs and exits 1 with a one-line reason.
# No cgroups and no systemd (sandboxes and containers often have neither): proctrack/linuxproc,
# task/none, daemons started directly. State, spool and logs under $SKD_SLURM_STATE.
# Stop with tests/slurm/stop_cluster.sh.
set -Eeuo pipefail   # -E: the ERR trap below also covers functions

STATE=${SKD_SLURM_STATE:-/var/lib/skd-slurm}
TIMEOUT=${SKD_SLURM_TIMEOUT:-60}           # seconds to wait for each daemon, then for the node
ACCOUNTING=${SKD_SLURM_ACCOUNTING:-1}
DB_PORT=${SKD_SLURM_DB_PORT:-3307}         # private MariaDB on 127.0.0.1 (not the system's 3306)
CONF_DIR=/etc/slurm
MUNGE_KEY=/etc/munge/munge.key
DB_SOCK=$STATE/db-run/mysqld.sock
T0=$(date +%s)

say() { echo "start_cluster: $*"; }
show_logs() {
    local f
    for f in /var/log/munge/munged.log "$STATE"/db-run/mysqld.log "$STATE"/log/slurmdbd.log \
        "$STATE"/log/slurmctld.log "$STATE"/log/slurmd.log; do
        if [ -f "$f" ]; then echo "---- tail $f" >&2; tail -n 30 "$f" >&2; fi
    done
    return 0
}
die() {
    show_logs
    echo "start_cluster: FAILED: $*" >&2
    exit 1
}
# shellcheck disable=SC2154  # rc is set in the trap itself
trap 'rc=$?; die "line $LINENO: \"$BASH_COMMAND\" exited with status $rc"' ERR
alive() {  # alive DIR/NAME.pid: the pid file names a live process called NAME (not a reused pid)
    local pid
    [ -f "$1" ] && pid=$(cat "$1") && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$(basename "$1" .pid)" ]
}
running() { alive "$1" || { sleep 1 && alive "$1"; }; }  # a daemon writes its pid file just after it forks
stop_pid() {  # stop_pid PIDFILE: TERM the process, wait up to 10 s, then KILL
    alive "$1" || return 0
    local pid
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}
wait_for() {  # wait_for WHAT PIDFILE COMMAND...: retry the command every 0.2 s for $TIMEOUT s
    local what=$1 pidfile=$2
    shift 2
    for _ in $(seq $((TIMEOUT * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        [ -z "$pidfile" ] || running "$pidfile" || die "$what is not running (see its log above)"
        sleep 0.2
    done
    die "$what not ready after ${TIMEOUT}s"
}
put_file() {  # put_file PATH MODE < content: (re)write PATH when its content differs
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if ! cmp -s "$tmp" "$1"; then
        install -m "$2" "$tmp" "$1"
        say "wrote $1"
    fi
    rm -f "$tmp"
}
# A daemon started from a configuration keeps a copy of it ($STATE/NAME.started-with); a running
# daemon whose configuration differs from that copy is stopped, to be started again.
stop_if_stale() {  # stop_if_stale NAME CONF
    if alive "$STATE/$1.pid" && ! cmp -s "$2" "$STATE/$1.started-with"; then
        say "stopping $1 (its configuration changed)"
        stop_pid "$STATE/$1.pid"
    fi
}
start_daemon() {  # start_daemon NAME CONF: start the daemon NAME (it forks) unless it runs
    alive "$STATE/$1.pid" && return 0
    say "starting $1"
    cp "$2" "$STATE/$1.started-with"
    "$1" || die "$1 exited with status $?"
}

if [ "$(id -u)" -ne 0 ]; then
    echo "start_cluster: FAILED: run as root (installs packages, starts daemons)" >&2
    exit 1
fi

# 1. Packages (no recommends: they pull ~35 plugin and -dev packages that a test cluster does not use).
packages=(munge slurm-client slurmctld slurmd)
[ "$ACCOUNTING" = 1 ] && packages+=(slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_log=$(mktemp)
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
        apt-get update -q >>"$apt_log" 2>&1 || true
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1 \
            || { tail -n 20 "$apt_log" >&2; die "apt-get install ${missing[*]} failed"; }
    fi
    rm -f "$apt_log"
fi

# 2. munge: a key, its directories, munged running as the munge user.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s "$MUNGE_KEY" ]; then
    say "creating $MUNGE_KEY"
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
fi
chown munge:munge "$MUNGE_KEY"
chmod 0400 "$MUNGE_KEY"
if ! alive /run/munge/munged.pid; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged || die "munged exited with status $?"
fi
wait_for "munged" /run/munge/munged.pid bash -c 'munge -n | unmunge'

# 3. Configuration: this host is the controller and the only compute node.
HOST=$(hostname -s)
NODE_LINE=$(slurmd -C | head -n 1)   # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
case $NODE_LINE in NodeName=*) ;; *) die "slurmd -C printed no NodeName line: $NODE_LINE" ;; esac
install -d -m 0755 "$CONF_DIR" "$STATE" "$STATE/ctld" "$STATE/d" "$STATE/log"
if [ "$ACCOUNTING" = 1 ]; then
    ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
else
    ACCT_LINES="AccountingStorageType=accounting_storage/none"
fi
put_file "$CONF_DIR/slurm.conf" 0644 <<CONF
# Written by tests/slurm/start_cluster.sh (skd-book): a single-node test cluster.
ClusterName=skdtest
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
# No cgroups here: processes are tracked through /proc, tasks are not confined.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$ACCT_LINES
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
$NODE_LINE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

# 4. Accounting: a private MariaDB (own data dir, 127.0.0.1:$DB_PORT), then slurmdbd.
if [ "$ACCOUNTING" = 1 ]; then
    install -d -o mysql -g mysql -m 0750 "$STATE/db" "$STATE/db-run"
    if [ ! -d "$STATE/db/mysql" ]; then
        say "creating the accounting database in $STATE/db"
        mariadb-install-db --user=mysql --datadir="$STATE/db" --skip-test-db \
            --auth-root-authentication-method=socket >"$STATE/log/mariadb-install-db.log" 2>&1 \
            || { cat "$STATE/log/mariadb-install-db.log" >&2; die "mariadb-install-db failed"; }
    fi
    # native AIO off: io_uring/libaio are often missing in sandboxes; sizes as slurmdbd recommends.
    db_args=(--no-defaults --user=mysql --datadir="$STATE/db" --socket="$DB_SOCK" --port="$DB_PORT"
        --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$STATE/db-run/mysqld.pid"
        --log-error="$STATE/db-run/mysqld.log" --innodb-use-native-aio=0
        --innodb-buffer-pool-size=512M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900)
    printf '%s\n' "${db_args[@]}" | put_file "$STATE/mariadbd.args" 0644
    stop_if_stale mariadbd "$STATE/mariadbd.args"
    if ! alive "$STATE/mariadbd.pid"; then
        say "starting mariadbd"
        rm -f "$STATE/db-run/mysqld.pid" "$DB_SOCK"
        cp "$STATE/mariadbd.args" "$STATE/mariadbd.started-with"
        /usr/sbin/mariadbd "${db_args[@]}" </dev/null >/dev/null 2>&1 &
        echo $! >"$STATE/mariadbd.pid"   # ours (mariadbd writes its own, as the mysql user, once up)
    fi
    wait_for "mariadbd" "$STATE/mariadbd.pid" mariadb-admin --socket="$DB_SOCK" -uroot ping
    mariadb --socket="$DB_SOCK" -uroot -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'skdtest';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "could not create the slurm database user"
    put_file "$CONF_DIR/slurmdbd.conf" 0600 <<CONF
# Written by tests/slurm/start_cluster.sh (skd-book).
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=skdtest
StorageLoc=slurm_acct_db
CONF
    stop_if_stale slurmdbd "$CONF_DIR/slurmdbd.conf"
    start_daemon slurmdbd "$CONF_DIR/slurmdbd.conf"
    wait_for "slurmdbd" "$STATE/slurmdbd.pid" sacctmgr -n list cluster
fi

# 5. slurmctld, then slurmd (each daemonizes itself). A changed slurm.conf restarts both.
stop_if_stale slurmd "$CONF_DIR/slurm.conf"
stop_if_stale slurmctld "$CONF_DIR/slurm.conf"
start_daemon slurmctld "$CONF_DIR/slurm.conf"
start_daemon slurmd "$CONF_DIR/slurm.conf"

# 6. Wait for the node: idle (or busy with jobs). A node left down/drained by an earlier run is resumed.
state=""
for _ in $(seq $((TIMEOUT * 2))); do
    state=$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -n 1 || true)
    case $state in
        idle | mixed | allocated | completing) break ;;
        down* | drain* | fail*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    running "$STATE/slurmctld.pid" || die "slurmctld is not running (see its log above)"
    running "$STATE/slurmd.pid" || die "slurmd is not running (see its log above)"
    sleep 0.5
done
case $state in
    idle | mixed | allocated | completing) ;;
    *) die "node $HOST is '${state:-unknown}' after ${TIMEOUT}s ($(sinfo -h -N -o '%N %T %E' 2>&1 | head -n 1))" ;;
esac
if [ "$ACCOUNTING" = 1 ]; then   # slurmctld registers its cluster with slurmdbd when it starts
    wait_for "cluster skdtest in the accounting database" "" \
        bash -c 'sacctmgr -n -P list cluster format=cluster | grep -qx skdtest'
fi
say "node $HOST $state, partition debug ready ($(($(date +%s) - T0)) s)"
