#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for the tests and the benchmark.
#   throwaway-postgres.sh start DIR   initdb + start in DIR (an empty folder others can
#                                     enter, e.g. mktemp -d /tmp/vmsnap-pg.XXXXXX);
#                                     prints the server's URL (database "postgres")
#   throwaway-postgres.sh stop DIR    stop the server and remove DIR
# Durability is off (fsync): the data is thrown away anyway. initdb refuses to run as
# root, so as root the cluster runs as the Debian package's "postgres" user.
set -euo pipefail
action=${1:?start or stop}
dir=${2:?the cluster folder}

bindir=""
if command -v initdb >/dev/null 2>&1; then
    bindir=$(dirname "$(command -v initdb)")
else
    for candidate in /usr/lib/postgresql/*/bin; do
        [ -x "$candidate/initdb" ] && bindir=$candidate
    done
fi
if [ -z "$bindir" ]; then
    echo "error: no PostgreSQL server binaries (initdb) found; install Debian postgresql" >&2
    exit 2
fi

as_owner=()
if [ "$(id -u)" -eq 0 ]; then
    as_owner=(runuser -u postgres --)
fi

case "$action" in
start)
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U vmsnap --auth=trust -E UTF8 \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql://vmsnap:vmsnap@127.0.0.1:$port/postgres"
    ;;
stop)
    if [ -d "$dir/data" ]; then
        "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "error: unknown action $action (start or stop)" >&2
    exit 2
    ;;
esac
