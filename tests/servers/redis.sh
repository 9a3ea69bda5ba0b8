#!/bin/sh
# redis.sh start|stop DIR — a throwaway Redis for the store tests.
#
# start: runs Debian's redis-server on 127.0.0.1 on a free port, daemonized, with its
# pid file, log and working directory under DIR, password flk-test-pw and no
# persistence; waits until it answers, then writes DIR/redis.url
# (redis://:flk-test-pw@127.0.0.1:PORT/0). A server already on the default port 6379
# (the package starts one) is neither used nor disturbed: the port is picked at random
# among free ones, and the script checks that the server answering is its own.
# stop: shuts that server down (SIGTERM, then SIGKILL) and removes its files. A start
# where a server of an earlier run is still running (an interrupted test run) stops it
# first.
set -eu

usage() {
  echo "usage: redis.sh start|stop DIR" >&2
  exit 64
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
password=flk-test-pw
server=${REDIS_SERVER:-/usr/bin/redis-server}
cli=${REDIS_CLI:-/usr/bin/redis-cli}
pidfile=$dir/redis.pid

say() { echo "redis.sh: $*" >&2; }

# The pid in the pid file when that process is alive and a redis-server (not a
# process that reused the pid of one long gone).
running_pid() {
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/comm" ]; then
    case $(cat "/proc/$pid/comm") in redis-server* | redis-check*) ;; *) return 1 ;; esac
  fi
  echo "$pid"
}

port_in_use() {
  ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

random_port() {
  n=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
  echo $((20000 + n % 40000))
}

start() {
  [ -x "$server" ] || {
    say "error: cannot run '$server': not installed (scripts/install-deps.sh)"
    exit 69
  }
  mkdir -p "$dir/redis"
  # Absolute: redis-server changes into --dir before it writes the pid file and log.
  dir=$(cd "$dir" && pwd)
  pidfile=$dir/redis.pid
  if pid=$(running_pid); then
    say "a server left running here (pid $pid): stopping it first"
    stop
    mkdir -p "$dir/redis"
  fi
  rm -f "$dir/redis.url" "$pidfile"
  tries=0
  while [ $tries -lt 20 ]; do
    tries=$((tries + 1))
    port=$(random_port)
    port_in_use "$port" && continue
    if ! "$server" --bind 127.0.0.1 --port "$port" --daemonize yes \
      --pidfile "$pidfile" --logfile "$dir/redis.log" --dir "$dir/redis" \
      --requirepass "$password" --save '' --appendonly no \
      --protected-mode yes >"$dir/redis.out" 2>&1; then
      say "error: cannot start '$server':"
      cat "$dir/redis.out" >&2
      exit 69
    fi
    # Up when our own process (the pid in the pid file) answers on the port.
    waited=0
    while [ $waited -lt 100 ]; do
      pid=$(running_pid) || pid=""
      if [ -n "$pid" ]; then
        answer=$(REDISCLI_AUTH=$password "$cli" -h 127.0.0.1 -p "$port" INFO server 2>/dev/null |
          tr -d '\r' | sed -n 's/^process_id://p')
        if [ "$answer" = "$pid" ]; then
          echo "redis://:$password@127.0.0.1:$port/0" >"$dir/redis.url.tmp"
          mv "$dir/redis.url.tmp" "$dir/redis.url"
          return 0
        fi
      elif [ $waited -gt 10 ]; then
        break # it exited (port taken under us?): try another port
      fi
      sleep 0.1
      waited=$((waited + 1))
    done
    if pid=$(running_pid); then kill "$pid" 2>/dev/null || :; fi
    rm -f "$pidfile"
  done
  say "error: cannot start '$server' (see '$dir/redis.log')"
  [ -f "$dir/redis.log" ] && tail -n 5 "$dir/redis.log" >&2
  exit 69
}

stop() {
  if pid=$(running_pid); then
    kill "$pid" 2>/dev/null || :
    waited=0
    while kill -0 "$pid" 2>/dev/null && [ $waited -lt 100 ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "warning: pid $pid did not stop on SIGTERM; killing it"
      kill -9 "$pid" 2>/dev/null || :
    fi
  fi
  rm -rf "$dir/redis" "$dir/redis.url" "$dir/redis.url.tmp" "$pidfile" "$dir/redis.log" "$dir/redis.out"
}

case $cmd in
start) start ;;
stop) stop ;;
*) usage ;;
esac
