#!/usr/bin/env bash
# Manage a MariaDB server of its own for Optuna studies (tests, CI, trying a database storage).
#
#   bash scripts/optuna_db.sh start         # install if needed, initialise, start, wait until it answers
#   bash scripts/optuna_db.sh url [NAME]    # create database NAME (default optuna); print its URL
#   bash scripts/optuna_db.sh drop NAME     # drop database NAME
#   bash scripts/optuna_db.sh status        # exit 1 if the server does not answer
#   bash scripts/optuna_db.sh stop          # stop the server (its data stay for the next start)
#
# The server is a second mariadbd with its own data dir, pid file and unix socket; it never
# touches the MariaDB that SLURM's accounting runs on (scripts/slurm_cluster.sh). It listens on
# its unix socket only (--skip-networking), so there is one such server per machine. Runs as root
# on Debian/Ubuntu without systemd; the daemon is detached from the calling shell and stopped
# through its pid file. Databases named optuna* belong to the user the URLs name, e.g.
#
#   mysql+pymysql://sce_optuna:sce_optuna@localhost/optuna?unix_socket=/run/sce_optuna_db/mysqld.sock
#
# (SQLAlchemy with the pymysql driver: pip install pymysql). Log: /var/log/sce_optuna_db.log.
#
# Environment overrides: OPTUNA_DB_TIMEOUT seconds to wait for the server (default 60).
set -euo pipefail

TIMEOUT="${OPTUNA_DB_TIMEOUT:-60}"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || { echo "[optuna_db] ERROR: OPTUNA_DB_TIMEOUT=$TIMEOUT is not a positive integer" >&2; exit 2; }
PACKAGES=(mariadb-server mariadb-client)
RUN=/run/sce_optuna_db
SOCK=$RUN/mysqld.sock
PID=$RUN/mysqld.pid
DATA=/var/lib/sce_optuna_db
LOG=/var/log/sce_optuna_db.log
DB_USER=sce_optuna
# unix socket only: the password never leaves the machine
DB_PASS=sce_optuna
NAME_RE='^optuna[A-Za-z0-9_]{0,58}$'

log() { echo "[optuna_db] $*" >&2; }

die() {
    log "ERROR: $*"
    if [[ -s $LOG ]]; then
        echo "----- tail -n 20 $LOG -----" >&2
        tail -n 20 "$LOG" >&2 || true
    fi
    exit 1
}

# Serialise start/stop (several test sessions may call start); fd 9 holds the lock and the
# daemon is started with 9>&- so that it does not keep it.
take_lock() {
    exec 9>/run/sce_optuna_db.lock
    flock -w 300 9 || die "could not lock /run/sce_optuna_db.lock within 300 s"
}

need_root() {
    [[ $(id -u) -eq 0 ]] || { log "ERROR: must run as root (starts a system daemon)"; exit 1; }
}

pid_alive() {
    local pid
    [[ -s $PID ]] || return 1
    pid=$(tr -dc '0-9' <"$PID")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null \
        && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == m*d ]]  # mariadbd or mysqld
}

answers() { mariadb-admin --socket="$SOCK" ping >/dev/null 2>&1; }

sql() { mariadb --socket="$SOCK" -u root --batch -e "$1"; }

check_name() {
    [[ $1 =~ $NAME_RE ]] || { log "ERROR: database name '$1' is invalid: must match $NAME_RE"; exit 2; }
}

cmd_install() {
    local p missing=()
    for p in "${PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] \
            || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    # the packages' scripts start nothing here (no systemd); slurm_cluster.sh does the same
    apt-get install -y -q "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

cmd_start() {
    need_root
    take_lock
    if pid_alive && answers; then
        log "running (socket $SOCK)"
    else
        cmd_install
        stop_server
        mkdir -p "$RUN" "$DATA"
        chown mysql:mysql "$RUN" "$DATA"
        touch "$LOG" && chown mysql:mysql "$LOG"
        if [[ ! -d $DATA/mysql ]]; then
            log "initialising the data dir $DATA"
            mariadb-install-db --user=mysql --datadir="$DATA" --skip-test-db \
                --auth-root-authentication-method=socket >/dev/null 2>&1 \
                || die "mariadb-install-db failed"
        fi
        log "starting mariadbd (socket $SOCK, no network)"
        setsid -f /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DATA" \
            --socket="$SOCK" --pid-file="$PID" --skip-networking --log-error="$LOG" \
            --innodb-buffer-pool-size=64M --max-connections=500 \
            </dev/null >/dev/null 2>&1 9>&-
        local deadline=$((SECONDS + TIMEOUT))
        until answers; do
            ((SECONDS < deadline)) || die "mariadbd did not answer within ${TIMEOUT}s"
            sleep 0.2
        done
    fi
    sql "CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
         GRANT ALL ON \`optuna%\`.* TO '$DB_USER'@'localhost';
         FLUSH PRIVILEGES;" || die "could not create the user $DB_USER"
}

stop_server() {
    local pid i
    pid_alive || { rm -f "$PID"; return 0; }
    pid=$(tr -dc '0-9' <"$PID")
    log "stopping mariadbd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$PID"; return 0; }
        sleep 0.1
    done
    log "mariadbd did not stop within 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PID"
}

cmd_stop() {
    need_root
    take_lock
    stop_server
}

cmd_url() {
    local name=${1:-optuna}
    check_name "$name"
    answers || die "the server does not answer: run bash $0 start"
    sql "CREATE DATABASE IF NOT EXISTS \`$name\`;" || die "could not create the database $name"
    echo "mysql+pymysql://$DB_USER:$DB_PASS@localhost/$name?unix_socket=$SOCK"
}

cmd_drop() {
    local name=${1:?usage: $0 drop NAME}
    check_name "$name"
    answers || die "the server does not answer: run bash $0 start"
    sql "DROP DATABASE IF EXISTS \`$name\`;" || die "could not drop the database $name"
}

cmd_status() {
    if pid_alive && answers; then
        log "running (pid $(tr -dc '0-9' <"$PID"), socket $SOCK)"
    else
        log "not running"
        exit 1
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    url) cmd_url "${2:-}" ;;
    drop) cmd_drop "${2:-}" ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|status|url [NAME]|drop NAME" >&2
        exit 2
        ;;
esac
