#!/usr/bin/env bash
# Manage a real one-node SLURM cluster on 127.0.0.1 (tests, CI, trying the SLURM path locally).
#
#   bash scripts/slurm_cluster.sh install   # apt-get the Debian packages (only if missing)
#   bash scripts/slurm_cluster.sh start     # install if needed, configure, start, wait for idle
#   bash scripts/slurm_cluster.sh wait      # wait until the node is usable (idle/mixed/allocated)
#   bash scripts/slurm_cluster.sh status    # sinfo + squeue; exit 1 if the cluster is down
#   bash scripts/slurm_cluster.sh stop      # stop slurmd, slurmctld, slurmdbd, mariadb, munged
#
# Runs as root on Debian/Ubuntu without systemd: every daemon is started by hand, detached from
# the calling shell, and stopped through its pid file. Ports 6817-6819 are fixed, so there is one
# cluster per machine. The node is called "localhost" (NodeAddr=127.0.0.1) whatever the machine's
# hostname is; the partition is "debug".
#
# Environment overrides (defaults just work):
#   SLURM_TEST_CPUS          CPUs advertised by the node (default 8, more than the machine has)
#   SLURM_TEST_MEM_MB        RealMemory of the node in MB (default: 90% of MemTotal)
#   SLURM_TEST_DEFMEM_MB     DefMemPerCPU in MB (default: min(1024, RealMemory / CPUs))
#   SLURM_TEST_MAXTIME       MaxTime of the debug partition (default 2:00:00)
#   SLURM_TEST_CLUSTER       ClusterName (default sce); changing it wipes the controller state
#   SLURM_TEST_TIMEOUT       seconds to wait for each daemon / the idle node (default 60)
#
# Notes: start is idempotent (a healthy cluster with unchanged config is left alone; a changed
# config restarts the affected daemons; a down/drained node is resumed). AuthInfo=cred_expire=10
# lets a requeued job restart after ~10 s instead of 120 s. Logs: /var/log/slurm/*.log,
# /var/log/mysql/error.log, /var/log/munge/munged.log.
set -euo pipefail

CPUS="${SLURM_TEST_CPUS:-8}"
CLUSTER="${SLURM_TEST_CLUSTER:-sce}"
MAXTIME="${SLURM_TEST_MAXTIME:-2:00:00}"
TIMEOUT="${SLURM_TEST_TIMEOUT:-60}"
NODE=localhost
for _v in CPUS TIMEOUT; do
    [[ ${!_v} =~ ^[1-9][0-9]*$ ]] || { echo "[slurm_cluster] ERROR: $_v=${!_v} is not a positive integer" >&2; exit 2; }
done
for _v in SLURM_TEST_MEM_MB SLURM_TEST_DEFMEM_MB; do
    [[ -z ${!_v:-} || ${!_v} =~ ^[1-9][0-9]*$ ]] || { echo "[slurm_cluster] ERROR: $_v=${!_v} is not a positive integer" >&2; exit 2; }
done

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server mariadb-client)

SLURM_ETC=/etc/slurm
SLURM_RUN=/run/slurm
SLURM_LOG=/var/log/slurm
CTLD_STATE=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
CTLD_PID=$SLURM_RUN/slurmctld.pid
SLURMD_PID=$SLURM_RUN/slurmd.pid
DBD_PID=$SLURM_RUN/slurmdbd.pid
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
MUNGE_KEY=/etc/munge/munge.key
MYSQL_RUN=/run/mysqld
MYSQL_SOCK=$MYSQL_RUN/mysqld.sock
MYSQL_PID=$MYSQL_RUN/mysqld.pid
MYSQL_DATA=/var/lib/mysql
MYSQL_LOG=/var/log/mysql/error.log
DB_NAME=slurm_acct_db
DB_USER=slurm
# MariaDB only listens on its unix socket (--skip-networking); the password never leaves the box.
DB_PASS=slurm_test_dbd

# where the health checks send their error output (wait_for shows it when it gives up)
CHECK_ERR=/dev/null

log() { echo "[slurm_cluster] $*" >&2; }

die() {
    log "ERROR: $*"
    dump_logs
    exit 1
}

dump_logs() {
    local f
    for f in "$SLURM_LOG/slurmctld.log" "$SLURM_LOG/slurmd.log" "$SLURM_LOG/slurmdbd.log" \
        "$MYSQL_LOG" /var/log/munge/munged.log; do
        if [[ -s $f ]]; then
            echo "----- tail -n 20 $f -----" >&2
            tail -n 20 "$f" >&2 || true
        fi
    done
}

# Serialise start/stop (parallel test workers may all call start). fd 9 holds the lock; every
# daemon is started with 9>&- so that none of them keeps it after this script exits.
LOCK_FILE=/run/slurm_cluster.lock
take_lock() {
    exec 9>"$LOCK_FILE"
    flock -w 300 9 || { log "ERROR: could not lock $LOCK_FILE within 300 s"; exit 1; }
}

need_root() {
    [[ $(id -u) -eq 0 ]] || { log "ERROR: must run as root (starts system daemons)"; exit 1; }
}

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------
missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) != "install ok installed" ]]; then
            echo "$p"
        fi
    done
}

cmd_install() {
    need_root
    local missing
    missing=$(missing_packages)
    if [[ -z $missing ]]; then
        log "packages already installed"
        return 0
    fi
    log "installing: ${missing//$'\n'/ }"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $missing >&2
    # Debian's maintainer scripts may start daemons where an init system exists; this script
    # owns them, so nothing else needs to be done here.
}

# ---------------------------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------------------------
# pid_alive PIDFILE NAME: the pid in PIDFILE is running and its command name starts with NAME
pid_alive() {
    local pidfile=$1 name=$2 pid comm
    [[ -s $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ $comm == "$name"* ]]
}

pid_of() { tr -dc '0-9' <"$1"; }

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "last check ($*) said:"
            CHECK_ERR=/dev/stderr "$@" || true
            die "timed out after ${secs}s waiting for $what"
        fi
        sleep 0.2
    done
}

# stop_daemons NAME:PIDFILE:COMM...: SIGTERM them all at once, wait up to 30 s, then SIGKILL
stop_daemons() {
    local spec name pidfile comm pid i alive
    local -a pids=()
    for spec in "$@"; do
        IFS=: read -r name pidfile comm <<<"$spec"
        if pid_alive "$pidfile" "$comm"; then
            pid=$(pid_of "$pidfile")
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$pidfile"
    done
    ((${#pids[@]})) || return 0
    for ((i = 0; i < 150; i++)); do # 30 s
        alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || return 0
        sleep 0.2
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop after 30 s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || return 0
        sleep 0.2
    done
}

# stop_daemon NAME PIDFILE COMM
stop_daemon() { stop_daemons "$1:$2:$3"; }

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT (sinfo & co. retry for
# ~10 s against a dead controller, so look before asking them)
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
CONFIG_CHANGED=0
DBD_CONFIG_CHANGED=0

# write_file PATH MODE OWNER CONTENT: write only when the content differs; return 0 if written
write_file() {
    local path=$1 mode=$2 owner=$3 content=$4 tmp
    if [[ -f $path ]] && [[ "$(cat "$path")" == "$content" ]]; then
        chmod "$mode" "$path"
        chown "$owner" "$path"
        return 1
    fi
    tmp=$(mktemp "$path.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    mv -f "$tmp" "$path"
    log "wrote $path"
    return 0
}

node_memory_mb() {
    if [[ -n ${SLURM_TEST_MEM_MB:-} ]]; then
        echo "$SLURM_TEST_MEM_MB"
        return
    fi
    local kb
    kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    local mb=$((kb * 9 / 10 / 1024))
    ((mb < 1024)) && mb=1024
    echo "$mb"
}

slurm_conf() {
    local mem=$1 defmem=$2
    cat <<EOF
# Written by scripts/slurm_cluster.sh -- a one-node test cluster on 127.0.0.1. Edits are overwritten.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
# A requeued job may only restart once its old credential has expired (default 120 s).
AuthInfo=cred_expire=10
StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$SLURM_LOG/slurmctld.log
SlurmdLogFile=$SLURM_LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups needed (containers/VMs without systemd).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Advertise the CPUs/memory below even where the machine has fewer (several tiny jobs at once).
SlurmdParameters=config_overrides
DefMemPerCPU=$defmem
# Reject requests no node/partition can ever satisfy at submission instead of pending forever.
EnforcePartLimits=ALL
# submitit reads job states with sacct: accounting must work.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=$MAXTIME State=UP
EOF
}

slurmdbd_conf() {
    cat <<EOF
# Written by scripts/slurm_cluster.sh. Edits are overwritten.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$SLURM_LOG/slurmdbd.log
PidFile=$DBD_PID
StorageType=accounting_storage/mysql
# "localhost" makes the MySQL client use the unix socket ($MYSQL_SOCK).
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$DB_PASS
EOF
}

cgroup_conf() {
    cat <<EOF
# Written by scripts/slurm_cluster.sh. Nothing uses cgroups here (proctrack/linuxproc, task/none).
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF
}

cmd_configure() {
    need_root
    mkdir -p "$SLURM_ETC" "$SLURM_RUN" "$SLURM_LOG" "$CTLD_STATE" "$SLURMD_SPOOL"
    chmod 755 "$SLURM_RUN" "$SLURM_LOG" "$CTLD_STATE" "$SLURMD_SPOOL"

    # munge: key (the Debian package usually creates one), runtime/log/state dirs owned by munge
    mkdir -p /etc/munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating munge key"
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge "$MUNGE_KEY" "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chmod 700 /etc/munge /var/log/munge
    chmod 400 "$MUNGE_KEY"
    chmod 755 "$MUNGE_RUN"
    chmod 711 /var/lib/munge

    local mem defmem
    mem=$(node_memory_mb)
    if [[ -n ${SLURM_TEST_DEFMEM_MB:-} ]]; then
        defmem=$SLURM_TEST_DEFMEM_MB
    else
        defmem=$((mem / CPUS))
        ((defmem > 1024)) && defmem=1024
    fi
    if write_file "$SLURM_ETC/slurm.conf" 644 root:root "$(slurm_conf "$mem" "$defmem")"; then
        CONFIG_CHANGED=1
    fi
    if write_file "$SLURM_ETC/cgroup.conf" 644 root:root "$(cgroup_conf)"; then
        CONFIG_CHANGED=1
    fi
    # slurmdbd refuses a config file readable by others or not owned by SlurmUser.
    if write_file "$SLURM_ETC/slurmdbd.conf" 600 root:root "$(slurmdbd_conf)"; then
        DBD_CONFIG_CHANGED=1
    fi

    # A controller state saved under another ClusterName makes slurmctld refuse to start.
    if [[ -s $CTLD_STATE/clustername ]] && [[ $(cat "$CTLD_STATE/clustername") != "$CLUSTER" ]]; then
        log "ClusterName changed to $CLUSTER: clearing $CTLD_STATE"
        stop_daemon slurmd "$SLURMD_PID" slurmd
        stop_daemon slurmctld "$CTLD_PID" slurmctld
        find "$CTLD_STATE" -mindepth 1 -delete
    fi
}

# ---------------------------------------------------------------------------------------------
# daemons
# ---------------------------------------------------------------------------------------------
munge_ok() { munge -n </dev/null 2>"$CHECK_ERR" | unmunge >/dev/null 2>"$CHECK_ERR"; }

start_munge() {
    if pid_alive "$MUNGE_PID" munged && munge_ok; then
        return 0
    fi
    stop_daemon munged "$MUNGE_PID" munged
    rm -f "$MUNGE_RUN/munge.socket.2" "$MUNGE_RUN/munge.socket.2.lock"
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1 9>&- \
        || die "munged failed to start"
    wait_for "$TIMEOUT" "munged" munge_ok
}

mysql_ok() { mariadb-admin --socket="$MYSQL_SOCK" ping >/dev/null 2>"$CHECK_ERR"; }

sql() { mariadb --socket="$MYSQL_SOCK" -u root --batch -e "$1"; }

start_mariadb() {
    if ! (pid_alive "$MYSQL_PID" mariadbd || pid_alive "$MYSQL_PID" mysqld) || ! mysql_ok; then
        stop_daemon mariadb "$MYSQL_PID" mariadbd
        mkdir -p "$MYSQL_RUN" "$(dirname "$MYSQL_LOG")" "$MYSQL_DATA"
        chown mysql:mysql "$MYSQL_RUN" "$(dirname "$MYSQL_LOG")" "$MYSQL_DATA"
        if [[ ! -d $MYSQL_DATA/mysql ]]; then
            log "initialising MariaDB datadir $MYSQL_DATA"
            mariadb-install-db --user=mysql --datadir="$MYSQL_DATA" --skip-test-db \
                --auth-root-authentication-method=socket >/dev/null 2>&1 \
                || die "mariadb-install-db failed"
        fi
        log "starting mariadbd (unix socket only)"
        setsid -f /usr/sbin/mariadbd --user=mysql --datadir="$MYSQL_DATA" \
            --socket="$MYSQL_SOCK" --pid-file="$MYSQL_PID" --skip-networking \
            --log-error="$MYSQL_LOG" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
            </dev/null >/dev/null 2>&1 9>&-
        wait_for "$TIMEOUT" "mariadbd" mysql_ok
    fi
    sql "CREATE DATABASE IF NOT EXISTS $DB_NAME;
         CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
         ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
         GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
         FLUSH PRIVILEGES;" || die "could not create the $DB_NAME database/user"
}

dbd_ok() {
    port_open 6819 || { echo "nothing listens on 127.0.0.1:6819" >"$CHECK_ERR"; return 1; }
    sacctmgr -n -P list cluster format=cluster >/dev/null 2>"$CHECK_ERR"
}

start_slurmdbd() {
    if ((DBD_CONFIG_CHANGED)); then
        stop_daemon slurmdbd "$DBD_PID" slurmdbd
    fi
    if ! pid_alive "$DBD_PID" slurmdbd || ! dbd_ok; then
        stop_daemon slurmdbd "$DBD_PID" slurmdbd
        log "starting slurmdbd"
        slurmdbd </dev/null >>"$SLURM_LOG/slurmdbd.out" 2>&1 9>&- || die "slurmdbd failed to start"
        wait_for "$TIMEOUT" "slurmdbd (sacctmgr list cluster)" dbd_ok
    fi
    if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER with slurmdbd"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
    fi
}

ctld_ok() {
    port_open 6817 || { echo "nothing listens on 127.0.0.1:6817" >"$CHECK_ERR"; return 1; }
    scontrol ping 2>"$CHECK_ERR" | grep -q 'is UP'
}

start_slurmctld() {
    if ((CONFIG_CHANGED)); then
        stop_daemon slurmd "$SLURMD_PID" slurmd
        stop_daemon slurmctld "$CTLD_PID" slurmctld
    fi
    if pid_alive "$CTLD_PID" slurmctld && ctld_ok; then
        return 0
    fi
    stop_daemon slurmctld "$CTLD_PID" slurmctld
    log "starting slurmctld"
    slurmctld </dev/null >>"$SLURM_LOG/slurmctld.out" 2>&1 9>&- || die "slurmctld failed to start"
    wait_for "$TIMEOUT" "slurmctld (scontrol ping)" ctld_ok
}

start_slurmd() {
    if pid_alive "$SLURMD_PID" slurmd; then
        return 0
    fi
    log "starting slurmd"
    slurmd -N "$NODE" </dev/null >>"$SLURM_LOG/slurmd.out" 2>&1 9>&- || die "slurmd failed to start"
}

# node_state: lower-case state of the node as sinfo reports it ("idle", "mixed", "down*", ...)
node_state() {
    port_open 6817 || return 0
    sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1
}

node_usable() {
    local st
    st=$(node_state)
    case $st in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

# healthy: every daemon alive and answering, the node usable
healthy() {
    pid_alive "$MUNGE_PID" munged && munge_ok \
        && { pid_alive "$MYSQL_PID" mariadbd || pid_alive "$MYSQL_PID" mysqld; } \
        && pid_alive "$DBD_PID" slurmdbd && pid_alive "$CTLD_PID" slurmctld \
        && pid_alive "$SLURMD_PID" slurmd && node_usable && dbd_ok
}

cmd_wait() {
    local deadline=$((SECONDS + TIMEOUT)) st resumed=0
    while :; do
        node_usable && {
            log "node $NODE is $(node_state)"
            return 0
        }
        st=$(node_state)
        # A node left down/drained by an earlier unclean stop: resume it once.
        if ((!resumed)) && [[ $st == down* || $st == drain* ]] && pid_alive "$SLURMD_PID" slurmd; then
            log "node $NODE is $st, resuming it"
            scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
            resumed=1
        fi
        if ((SECONDS >= deadline)); then
            if port_open 6817; then
                sinfo -N -l >&2 || true
                scontrol show node "$NODE" >&2 || true
            else
                log "slurmctld does not listen on 127.0.0.1:6817"
            fi
            die "node $NODE not idle after ${TIMEOUT}s (state: ${st:-unknown})"
        fi
        sleep 0.3
    done
}

cmd_start() {
    need_root
    take_lock
    local t0=$SECONDS
    if [[ -n $(missing_packages) ]]; then
        cmd_install
    fi
    cmd_configure
    if ((!CONFIG_CHANGED && !DBD_CONFIG_CHANGED)) && healthy; then
        log "cluster already up: node $NODE is $(node_state)"
        return 0
    fi
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    cmd_wait
    log "cluster up in $((SECONDS - t0))s"
}

cmd_stop() {
    need_root
    take_lock
    local mysql_comm=mariadbd
    pid_alive "$MYSQL_PID" mysqld && mysql_comm=mysqld
    stop_daemons "slurmd:$SLURMD_PID:slurmd" "slurmctld:$CTLD_PID:slurmctld" \
        "slurmdbd:$DBD_PID:slurmdbd"
    stop_daemons "mariadb:$MYSQL_PID:$mysql_comm" "munged:$MUNGE_PID:munged"
    log "stopped"
}

cmd_status() {
    if command -v sinfo >/dev/null 2>&1 && port_open 6817 && node_usable && dbd_ok; then
        sinfo
        echo
        squeue
        return 0
    fi
    echo "slurm cluster is down (or unhealthy)"
    local d
    for d in "munged:$MUNGE_PID:munged" "mariadb:$MYSQL_PID:m" "slurmdbd:$DBD_PID:slurmdbd" \
        "slurmctld:$CTLD_PID:slurmctld" "slurmd:$SLURMD_PID:slurmd"; do
        IFS=: read -r name pidfile comm <<<"$d"
        if pid_alive "$pidfile" "$comm"; then
            echo "  $name: running (pid $(pid_of "$pidfile"))"
        else
            echo "  $name: not running"
        fi
    done
    if command -v sinfo >/dev/null 2>&1 && port_open 6817; then
        echo "  node $NODE: $(node_state || true)"
    fi
    return 1
}

usage() {
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    wait) cmd_wait ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    configure) cmd_configure ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
