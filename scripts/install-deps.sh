#!/bin/sh
# Install everything flk needs to build, test and benchmark on Debian 12.
# Idempotent: packages already installed are skipped. Needs root (or sudo).
set -eu

packages="
  build-essential cmake pkg-config
  libcli11-dev libfmt-dev libssl-dev libcurl4-openssl-dev libsqlite3-dev
  doctest-dev libyaml-cpp-dev nlohmann-json3-dev libsimdjson-dev libxxhash-dev
  libcpp-httplib-dev libpq-dev libhiredis-dev
  bats jq mandoc shellcheck clang libclang-rt-14-dev sqlite3 hyperfine
  postgresql redis-server prometheus socat iproute2 systemd openssl curl time
"

missing=""
for p in $packages; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "install-deps.sh: error: cannot install '$missing': not root and no sudo" >&2
    exit 77
  }
  SUDO=sudo
fi

echo "install-deps.sh: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
