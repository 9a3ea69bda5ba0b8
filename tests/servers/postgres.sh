#!/bin/sh
# A throwaway PostgreSQL cluster for the store tests.
#
#   postgres.sh start DIR   initdb a fresh cluster in DIR/pg, listening on 127.0.0.1 on
#                           a free port (and a Unix socket in DIR/pg), with a database
#                           "flk" owned by role "flk" (password "flk-test-pw"); writes
#                           postgres://flk:flk-test-pw@127.0.0.1:PORT/flk to
#                           DIR/postgres.url once the server accepts connections.
#   postgres.sh stop DIR    stops it (if it runs) and removes DIR/pg.
#
# Role flk must give its password over TCP (scram-sha-256), so tests can check that a
# wrong one is refused; everything else is trusted. Durability is off (fsync=off): the
# data is thrown away. As root, the server runs as the "postgres" user (initdb and
# pg_ctl refuse root). Binaries: $PG_BINDIR, else the newest /usr/lib/postgresql/*/bin
# (Debian), else $PATH. Independent of any cluster the postgresql package started.
set -eu

usage() {
  echo "usage: postgres.sh start|stop DIR" >&2
  exit 64
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
if [ "$cmd" = start ]; then mkdir -p "$dir"; fi
if [ -d "$dir" ]; then dir=$(cd "$dir" && pwd); fi # absolute: start changes directory
pg=$dir/pg
# When the postgres user cannot reach DIR (a checkout under a 0700 home), the cluster
# lives in a directory of its own under /tmp and DIR/pg is a symbolic link to it.
if [ -L "$pg" ]; then pg=$(readlink "$pg"); fi
data=$pg/data
log=$pg/server.log
password=flk-test-pw

err() {
  echo "postgres.sh: error: $*" >&2
  exit 1
}

find_bindir() {
  if [ -n "${PG_BINDIR:-}" ]; then
    echo "$PG_BINDIR"
    return
  fi
  # shellcheck disable=SC2012 # the names are version numbers, no odd characters
  best=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$best" ] && [ -x "$best/initdb" ]; then
    echo "$best"
    return
  fi
  initdb=$(command -v initdb 2>/dev/null) || err "cannot find 'initdb': install the postgresql package or set PG_BINDIR"
  dirname "$initdb"
}

# Runs a command as the user that owns the cluster (root cannot).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      # su needs one command string: quote each argument.
      line=""
      for a in "$@"; do
        line="$line '$(printf '%s' "$a" | sed "s/'/'\\\\''/g")'"
      done
      su postgres -s /bin/sh -c "$line"
    fi
  else
    "$@"
  fi
}

port_in_use() {
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
  else
    return 1 # unknown: starting the server will tell
  fi
}

stop() {
  if [ -f "$data/postmaster.pid" ]; then
    bin=$(find_bindir)
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$pg"
  rm -f "$dir/pg" "$dir/postgres.url"
}

start() {
  bin=$(find_bindir)
  stop # anything left by an earlier run
  mkdir -p "$pg"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || err "cannot run PostgreSQL as root and there is no 'postgres' user"
    chown postgres "$pg"
    if ! as_owner test -w "$pg"; then
      rmdir "$pg"
      pg=$(mktemp -d /tmp/flk-pg.XXXXXX)
      chown postgres "$pg"
      ln -s "$pg" "$dir/pg"
      data=$pg/data
      log=$pg/server.log
      as_owner test -w "$pg" || err "cannot start PostgreSQL in '$pg': user 'postgres' cannot write there"
    fi
  fi
  cd / # the owner may not be able to read the current directory
  as_owner "$bin/initdb" -D "$data" -U postgres -E UTF8 --locale=C --auth=trust --no-sync --no-instructions \
    >"$pg/initdb.log" 2>&1 || {
    cat "$pg/initdb.log" >&2
    err "initdb of '$data' failed"
  }
  hba=$data/pg_hba.conf
  {
    echo "# flk tests: role flk needs its password over TCP; the rest is trusted."
    echo "local all all trust"
    echo "host all flk 127.0.0.1/32 scram-sha-256"
    echo "host all all 127.0.0.1/32 trust"
  } >"$hba.new"
  chmod 600 "$hba.new"
  [ "$(id -u)" -ne 0 ] || chown postgres "$hba.new"
  mv "$hba.new" "$hba"

  # The Unix socket lives beside the data when its path fits in sun_path (108 bytes);
  # the tests themselves use TCP.
  sockets=$pg
  [ ${#pg} -le 90 ] || sockets=""

  # Loopback only; durability off (the data is thrown away).
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$sockets'"
    echo "fsync = off"
    echo "synchronous_commit = off"
    echo "full_page_writes = off"
    echo "max_connections = 200"
  } >>"$data/postgresql.conf"

  # A free port: random start, then upwards; a port taken between the check and the
  # start makes pg_ctl fail, and the next one is tried.
  port=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 + 20000 ))
  tries=0
  while :; do
    tries=$((tries + 1))
    [ $tries -le 50 ] || err "cannot start PostgreSQL: no free port found (see '$log')"
    port=$((port + 1))
    [ $port -lt 65000 ] || port=20000
    if port_in_use $port; then continue; fi
    rm -f "$log"
    if as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 -s -o "-p $port" start >/dev/null 2>&1; then
      break
    fi
    # A port clash shows in the log; anything else is fatal.
    clash="could not bind\|Address already in use\|could not create any TCP/IP sockets\|could not create lock file"
    if ! grep -q "$clash" "$log" 2>/dev/null; then
      cat "$log" >&2 2>/dev/null || true
      err "cannot start PostgreSQL in '$data' (see the log above)"
    fi
  done

  psql() {
    as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"
  }
  psql -d postgres -c "CREATE ROLE flk LOGIN PASSWORD '$password'" -c "CREATE DATABASE flk OWNER flk" >/dev/null ||
    err "cannot create role and database 'flk'"
  # The URL proves itself before it is published.
  url="postgres://flk:$password@127.0.0.1:$port/flk"
  PGCONNECT_TIMEOUT=10 "$bin/psql" -X -q -d "$url" -c "SELECT 1" >/dev/null || err "cannot connect to '$url'"
  printf '%s\n' "$url" >"$dir/postgres.url.new"
  mv "$dir/postgres.url.new" "$dir/postgres.url"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
