#!/bin/sh
# Stops what start.sh started under DIR (each server's script knows how).
set -u
dir=${1:?usage: stop.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
status=0
for s in postgres redis; do
  if [ -x "$here/$s.sh" ]; then "$here/$s.sh" stop "$dir" || status=1; fi
done
exit $status
