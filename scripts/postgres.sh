#!/usr/bin/env bash
# A throwaway PostgreSQL server for the multi-worker tuning tests (and for trying
# `wordformer tune --storage postgresql://...` by hand).
#
#   scripts/postgres.sh install      install the server (apt-get) when no initdb can be found
#   scripts/postgres.sh start PORT   new cluster in a fresh temp folder, served on 127.0.0.1:PORT;
#                                    prints the folder; connect as postgresql://postgres@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop DIR     stop the server started in DIR and delete DIR
#
# The server refuses to run as root, so as root every server command runs as the `postgres` user
# (runuser), in a folder that user owns. Authentication is `trust` on loopback only: for tests.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

find_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return 0; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
    return 1
}

as_server_user() {
    if [ "$(id -u)" = "0" ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cmd_install() {
    if find_bindir >/dev/null; then
        echo "postgres.sh: found $(find_bindir)/initdb"
        return 0
    fi
    [ "$(id -u)" = "0" ] || die "initdb not found and not root: install PostgreSQL (e.g. sudo apt-get install -y postgresql)"
    command -v apt-get >/dev/null 2>&1 || die "initdb not found and no apt-get: install PostgreSQL with this system's package manager"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends postgresql >/dev/null || die "apt-get install postgresql failed"
    find_bindir >/dev/null || die "postgresql installed but initdb still not found under /usr/lib/postgresql/*/bin"
    echo "postgres.sh: installed $(find_bindir)/initdb"
}

cmd_start() {
    local port="${1:-}" bindir dir
    [ -n "$port" ] || die "usage: postgres.sh start PORT"
    bindir=$(find_bindir) || die "initdb not found; run: scripts/postgres.sh install"
    if [ "$(id -u)" = "0" ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres || die "cannot create the postgres user"
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/wordformer-pg.XXXXXX")
    chmod 700 "$dir"
    if [ "$(id -u)" = "0" ]; then chown postgres: "$dir"; fi
    if ! as_server_user "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        die "initdb failed in $dir"
    fi
    if ! as_server_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >"$dir/pg_ctl.log" 2>&1; then
        cat "$dir/pg_ctl.log" "$dir/server.log" >&2 2>/dev/null || true
        die "the server did not start on port $port (log above)"
    fi
    echo "$dir"
}

cmd_stop() {
    local dir="${1:-}" bindir
    [ -n "$dir" ] && [ -d "$dir" ] || die "usage: postgres.sh stop DIR (the folder start printed)"
    case "$dir" in */wordformer-pg.*) ;; *) die "refusing to remove $dir: not a folder made by postgres.sh start" ;; esac
    bindir=$(find_bindir) || die "initdb not found"
    as_server_user "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) die "usage: postgres.sh install | start PORT | stop DIR" ;;
esac
