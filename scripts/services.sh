#!/usr/bin/env bash
# Make sure the servers the test suite talks to are running, and say where they are.
#
#   scripts/services.sh            Redis, PostgreSQL, Chromium, openssl and nats-server (what
#                                  `make test` needs)
#   scripts/services.sh redis      only Redis (what `make bench` needs)
#   scripts/services.sh postgres   only PostgreSQL
#   scripts/services.sh browser    only Chromium (Debian's, for the browser tests)
#   scripts/services.sh node       only Node.js and npm (for the browser client's checks)
#   scripts/services.sh nats       only nats-server, installed (tests and bench start their own)
#   scripts/services.sh stop       stop the private Redis this script started
#
# Redis: the tests use their OWN redis-server on 127.0.0.1:6399, so they never touch the
# system's Redis on 6379. It keeps nothing on disk; its pid and log are in .run/.
#
# PostgreSQL: the first of these that works is used.
#   1. The server on 127.0.0.1:5432 lets user "postgres" in without a password (the usual
#      case on our machines): postgres://postgres@127.0.0.1:5432/realtime
#   2. Otherwise PostgreSQL is installed (apt-get) and/or started (pg_ctlcluster) if needed,
#      and if it still wants a password over TCP (a fresh Debian install does), we connect
#      over its Unix socket as a superuser role named after the current OS user
#      ("root" in CI), which peer authentication admits without a password.
#
# Progress goes to stderr. The result goes to stdout, which the Makefile reads:
#   REDIS_URL='redis://127.0.0.1:6399/0'
#   PG_DATABASE_URL='postgres://postgres@127.0.0.1:5432/realtime'
# and is merged into .run/services.env, for running pytest by hand:
#   set -a; . .run/services.env; set +a; .venv/bin/pytest ...
# pytest-django creates and drops the test databases (test_realtime_<pid>) by itself.
#
# Everything here is idempotent: when the services already run it takes a fraction of a
# second. Overridable for odd machines: RT_REDIS_PORT, RT_PG_HOST, RT_PG_PORT, RT_PG_DB.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
ENV_FILE="$RUN/services.env"
REDIS_PORT="${RT_REDIS_PORT:-6399}"
PG_HOST="${RT_PG_HOST:-127.0.0.1}"
PG_PORT="${RT_PG_PORT:-5432}"
PG_DB="${RT_PG_DB:-realtime}"
PG_SOCKET_DIR=/var/run/postgresql
VENV_PY="$ROOT/.venv/bin/python"

mkdir -p "$RUN"

say() { echo "services: $*" >&2; }
die() {
    echo "services: ERROR: $*" >&2
    exit 1
}

apt_updated=0
apt_install() {
    if ! command -v apt-get >/dev/null; then
        die "'$*' is needed but this machine has no apt-get; install it by hand."
    fi
    if [ "$(id -u)" != 0 ]; then
        die "'$*' is needed; installing it takes root: sudo apt-get install -y $*"
    fi
    if [ "$apt_updated" = 0 ]; then
        say "refreshing the Debian package lists (apt-get update)"
        apt-get update -qq
        apt_updated=1
    fi
    say "installing $* with apt-get (one-time, may take a minute)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------

redis_answers() {
    if command -v redis-cli >/dev/null; then
        [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
    else
        # No redis-cli: speak the protocol by hand (inline command PING -> "+PONG").
        python3 - "$REDIS_PORT" <<'EOF'
import socket
import sys

try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        ok = sock.recv(64).startswith(b"+PONG")
except OSError:
    ok = False
sys.exit(0 if ok else 1)
EOF
    fi
}

ensure_redis() {
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
    if redis_answers; then
        say "Redis for tests is already running on 127.0.0.1:$REDIS_PORT"
        return
    fi
    if ! command -v redis-server >/dev/null; then
        say "redis-server is not installed"
        apt_install redis-server
    fi
    say "starting a private Redis for tests on 127.0.0.1:$REDIS_PORT (no persistence; log: .run/redis-$REDIS_PORT.log)"
    # Started directly rather than through systemd, which containers and CI do not have.
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes --dir "$RUN" \
        --pidfile "$RUN/redis-$REDIS_PORT.pid" --logfile "$RUN/redis-$REDIS_PORT.log"
    for _ in $(seq 50); do
        redis_answers && return
        sleep 0.2
    done
    tail -n 20 "$RUN/redis-$REDIS_PORT.log" >&2 || true
    die "Redis did not answer on 127.0.0.1:$REDIS_PORT within 10 s (log above)."
}

stop_redis() {
    local pidfile="$RUN/redis-$REDIS_PORT.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "stopping the tests' Redis on port $REDIS_PORT (pid $(cat "$pidfile"))"
        kill "$(cat "$pidfile")"
    else
        say "the tests' Redis on port $REDIS_PORT was not started from this checkout; nothing to stop"
    fi
    rm -f "$pidfile"
}

# ---------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------

# pg_sql HOST USER SQL: run one query against database "postgres" and print the result.
# Uses psql when present, else psycopg from the venv. Never prompts for a password.
pg_sql() {
    local host="$1" user="$2" sql="$3"
    if command -v psql >/dev/null; then
        PGCONNECT_TIMEOUT=5 psql -X -w -q -At -h "$host" -p "$PG_PORT" -U "$user" \
            -d postgres -c "$sql" 2>/dev/null
    elif [ -x "$VENV_PY" ]; then
        "$VENV_PY" - "$host" "$PG_PORT" "$user" "$sql" <<'EOF' 2>/dev/null
import sys

import psycopg

host, port, user, sql = sys.argv[1:]
with psycopg.connect(
    host=host, port=port, user=user, dbname="postgres", connect_timeout=5, autocommit=True
) as conn:
    cur = conn.execute(sql)
    for row in cur.fetchall() if cur.description else []:
        print("|".join(str(value) for value in row))
EOF
    else
        return 1
    fi
}

pg_admits() { [ "$(pg_sql "$1" "$2" 'SELECT 1')" = 1 ]; }

start_local_postgres() {
    if ! command -v pg_lsclusters >/dev/null || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
        say "PostgreSQL is not installed on this machine"
        apt_install postgresql
    fi
    # Prefer the cluster configured for our port; pg_lsclusters -h prints
    # "version name port status owner datadir logfile".
    local line
    line="$(pg_lsclusters -h | awk -v p="$PG_PORT" '$3 == p' | head -n 1)"
    [ -n "$line" ] || line="$(pg_lsclusters -h | head -n 1)"
    [ -n "$line" ] || die "PostgreSQL is installed but has no cluster (try: pg_createcluster --start 15 main)."
    local ver name port status
    read -r ver name port status _ <<<"$line"
    PG_PORT="$port"
    if [ "$status" != online ]; then
        say "PostgreSQL $ver/$name is stopped; starting it (pg_ctlcluster $ver $name start)"
        pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start
    fi
}

ensure_postgres() {
    local how=""
    if pg_admits "$PG_HOST" postgres; then
        how=tcp
    else
        say "no PostgreSQL lets user 'postgres' in without a password on $PG_HOST:$PG_PORT; looking at the local server"
        start_local_postgres
        say "waiting for PostgreSQL to accept connections"
        for _ in $(seq 30); do
            pg_isready -q -h "$PG_SOCKET_DIR" -p "$PG_PORT" && break
            sleep 0.5
        done
        pg_isready -q -h "$PG_SOCKET_DIR" -p "$PG_PORT" ||
            die "PostgreSQL did not start within 15 s; see /var/log/postgresql/"
        if pg_admits "$PG_HOST" postgres; then
            how=tcp
        fi
    fi

    if [ "$how" = tcp ]; then
        say "PostgreSQL on $PG_HOST:$PG_PORT admits user 'postgres' without a password"
        PG_DATABASE_URL="postgres://postgres@$PG_HOST:$PG_PORT/$PG_DB"
        PG_CONN_HOST="$PG_HOST"
        PG_CONN_USER=postgres
    else
        # Fresh Debian: TCP wants a password (scram), the Unix socket uses peer auth, which
        # admits an OS user as the database role of the same name. Give ours such a role.
        local me
        me="$(id -un)"
        say "TCP login needs a password here; using the Unix socket in $PG_SOCKET_DIR as role '$me' instead"
        if ! pg_admits "$PG_SOCKET_DIR" "$me"; then
            [ "$(id -u)" = 0 ] || die "cannot create PostgreSQL role '$me' without root; ask for: createuser -s $me"
            say "creating the PostgreSQL superuser role '$me' (su postgres -c 'createuser -s $me')"
            su postgres -s /bin/sh -c "createuser -s -h '$PG_SOCKET_DIR' -p '$PG_PORT' '$me'" ||
                die "could not create PostgreSQL role '$me'"
            pg_admits "$PG_SOCKET_DIR" "$me" ||
                die "role '$me' exists but the Unix socket in $PG_SOCKET_DIR still refuses it"
        fi
        # A socket directory goes in the host part of the URL, percent-encoded.
        PG_DATABASE_URL="postgres://$me@${PG_SOCKET_DIR//\//%2F}:$PG_PORT/$PG_DB"
        PG_CONN_HOST="$PG_SOCKET_DIR"
        PG_CONN_USER="$me"
    fi

    # The tests need only the server (pytest-django creates test_$PG_DB); the database itself
    # is for `DATABASE_URL=... make run`.
    if [ "$(pg_sql "$PG_CONN_HOST" "$PG_CONN_USER" "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
        say "creating the database '$PG_DB'"
        pg_sql "$PG_CONN_HOST" "$PG_CONN_USER" "CREATE DATABASE \"$PG_DB\"" >/dev/null ||
            die "could not create database '$PG_DB'"
    fi
}

# ---------------------------------------------------------------------------------------
# Chromium for the browser tests (tests/test_browser*.py drive it with Playwright).
# Debian's package: Playwright's own browser download does not work on our machines.
# ---------------------------------------------------------------------------------------

ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then
        say "Chromium for the browser tests is installed (/usr/bin/chromium)"
        return
    fi
    apt_install chromium
    [ -x /usr/bin/chromium ] || die "apt-get installed chromium, but /usr/bin/chromium is missing."
}

# ---------------------------------------------------------------------------------------
# openssl: the TLS Redis tests (tests/test_redis_deploy.py) make their certificates with it.
# ---------------------------------------------------------------------------------------

ensure_openssl() {
    if command -v openssl >/dev/null; then
        return
    fi
    apt_install openssl
}

# ---------------------------------------------------------------------------------------
# nats-server: the NATS backplane's tests (tests/e2e/test_nats.py) and `make bench` start
# their own on a free port, so it only has to be installed (Debian's: /usr/sbin, not on
# every PATH).
# ---------------------------------------------------------------------------------------

ensure_nats() {
    if command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]; then
        return
    fi
    say "nats-server is not installed"
    apt_install nats-server
}

# ---------------------------------------------------------------------------------------
# Node.js and npm: the browser client's type check (tsc) and unit tests (node --test), in
# tests/js/. Machines usually have them; else Debian's (bookworm: Node.js 18.20, enough).
# ---------------------------------------------------------------------------------------

ensure_node() {
    if command -v node >/dev/null && command -v npm >/dev/null; then
        return
    fi
    apt_install nodejs npm
    command -v node >/dev/null || die "apt-get installed nodejs, but there is no node command."
}

# ---------------------------------------------------------------------------------------

what="${1:-all}"
REDIS_URL=""
PG_DATABASE_URL=""
case "$what" in
    all) ensure_redis; ensure_postgres; ensure_chromium; ensure_openssl; ensure_nats ;;
    redis) ensure_redis ;;
    nats) ensure_nats; exit 0 ;;
    postgres) ensure_postgres ;;
    browser) ensure_chromium ;;
    node) ensure_node; exit 0 ;;
    stop) stop_redis; exit 0 ;;
    *) die "unknown argument '$what' (expected: all, redis, postgres, browser, node, nats or stop)" ;;
esac

# Merge into the env file: keys not ensured by this run keep their values. Written to a
# temporary file and renamed, so a concurrent reader never sees half a file.
tmp="$(mktemp "$RUN/.services.env.XXXXXX")"
{
    echo "# Written by scripts/services.sh. To run pytest by hand:"
    echo "#   set -a; . .run/services.env; set +a; .venv/bin/pytest ..."
    for key in REDIS_URL PG_DATABASE_URL; do
        if [ -n "${!key}" ]; then
            echo "$key='${!key}'"
        elif [ -f "$ENV_FILE" ]; then
            grep "^$key=" "$ENV_FILE" || true
        fi
    done
} >"$tmp"
mv -f "$tmp" "$ENV_FILE"

say "ready (also written to .run/services.env)"
# The Makefile reads these lines.
for key in REDIS_URL PG_DATABASE_URL; do
    if [ -n "${!key}" ]; then
        echo "$key='${!key}'"
    fi
done
