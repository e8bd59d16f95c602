#!/usr/bin/env bash
# Makes sure this machine has what `make test` and `make demo` need:
# Go, PostgreSQL 15 server binaries (with contrib: hstore, citext) and
# pg_dump/pg_restore, and redis-server. Installs missing ones from the Debian
# packages when it can (root, or sudo), otherwise says exactly what to install.
set -euo pipefail

missing_pkgs=()
have_pg_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
have_contrib() { ls /usr/share/postgresql/*/extension/hstore.control >/dev/null 2>&1; }

have_pg_server || missing_pkgs+=(postgresql)
have_contrib || missing_pkgs+=(postgresql-contrib)
command -v pg_dump >/dev/null 2>&1 || missing_pkgs+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || missing_pkgs+=(redis-server)
# deploy/ tests: promtool checks the alert rules, systemd-analyze the unit.
command -v promtool >/dev/null 2>&1 || missing_pkgs+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || missing_pkgs+=(systemd)
# bench/snapshot only (DEPS_BENCH=1): pgcopydb, the side-by-side reference.
if [ "${DEPS_BENCH:-}" = 1 ]; then command -v pgcopydb >/dev/null 2>&1 || missing_pkgs+=(pgcopydb); fi

if ((${#missing_pkgs[@]})); then
  echo "deps: missing Debian packages: ${missing_pkgs[*]}" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""
  elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"
  else
    echo "deps: cannot install them (not root, no sudo): run 'apt-get install ${missing_pkgs[*]}' as root" >&2
    exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing_pkgs[@]}"
fi

if ! command -v go >/dev/null 2>&1; then
  echo "deps: Go is not installed (need 1.26 or newer): install it from the Go project's release archive and put it on PATH" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "deps: running as root, the test servers run as the 'postgres' OS user, which is missing: apt-get install postgresql creates it" >&2
  exit 1
fi
echo "deps: ok ($(go version | awk '{print $3}'), PostgreSQL $(ls -d /usr/lib/postgresql/*/ 2>/dev/null | xargs -n1 basename | sort -n | tail -1), $(redis-server --version | awk '{print $3}'))"
