#!/bin/sh
# Starts the servers the store tests need (PostgreSQL, Redis) on loopback, on free
# ports, under DIR; each back end's script writes DIR/<name>.url. CTest runs this as
# the setup of the "servers" fixture and stop.sh as its cleanup.
set -eu
dir=${1:?usage: start.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
for s in postgres redis; do
  if [ -x "$here/$s.sh" ]; then "$here/$s.sh" start "$dir"; fi
done
