#!/usr/bin/env bash
# Install everything akig.runbooks and its lab need on a Debian 12 machine, idempotently:
#   - Debian packages: PostgreSQL 15, PgBouncer, Redis, OpenSSH server, sudo, Node.js/npm, python3-venv, git
#   - .venv: the pinned controller toolchain (requirements.txt + constraints.txt)
#   - .collections: community.postgresql and community.general unpacked from the `ansible`
#     wheel on PyPI (Galaxy is not reachable), plus this collection linked as akig.runbooks
#   - lab/node_modules: pm2 and the AKIG app's dependencies from lab/package-lock.json
#   - an offline stand-in for ansible-test's pip bootstrap script
# Safe to run again: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
ANSIBLE_WHEEL_VERSION=12.3.0
log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the lab starts PostgreSQL as the postgres user and sshd on port 22); try: sudo $0"
command -v apt-get >/dev/null || die "apt-get not found: setup supports Debian 12 (bookworm) only"

# --- Debian packages -------------------------------------------------------
need=()
for pkg in postgresql-15 postgresql-client-15 pgbouncer redis-server openssh-server sudo python3-venv git procps iproute2 curl ca-certificates; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then need+=(nodejs npm); fi
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d stops the packages from starting their own services: the lab runs its own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
# pgbouncer: the package's own service (:6432) is never used (the tests and the lab start their own with their
# own config); keep it stopped and disabled, also when the package was installed before this script ran.
if [ -x /etc/init.d/pgbouncer ]; then
  if [ -d /run/systemd/system ]; then systemctl disable --now pgbouncer.service >/dev/null 2>&1 || true
  else
    service pgbouncer status >/dev/null 2>&1 && service pgbouncer stop >/dev/null 2>&1 || true
    update-rc.d pgbouncer disable >/dev/null 2>&1 || true
  fi
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || die "Node.js >= 18 is needed (found $(node --version)); install a newer nodejs package"

# --- The checkout must be traversable by other users: PostgreSQL runs as 'postgres' on data
# under lab/state, and a pm2 test runs pm2 as 'nobody' (a `mktemp -d` clone is 0700).
p=$root
while [ "$p" != / ]; do
  [ -n "$(find "$p" -maxdepth 0 -perm -o=x)" ] || chmod o+x "$p"
  p=$(dirname "$p")
done

# --- Python toolchain --------------------------------------------------------
PY=${AKIG_PYTHON:-python3}
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  log "creating .venv with $($PY --version)"
  rm -rf .venv
  "$PY" -m venv .venv
fi
stamp=.venv/.akig-requirements.sha256
want=$(cat requirements.txt constraints.txt | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "pip install -r requirements.txt"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
  echo "$want" > "$stamp"
fi

# --- Collections (no Galaxy: unpack from the ansible wheel on PyPI) -------------
.venv/bin/python scripts/install-collections.py --ansible-version "$ANSIBLE_WHEEL_VERSION" --dest .collections
mkdir -p .collections/ansible_collections/akig
ln -sfn "$root" .collections/ansible_collections/akig/runbooks

# --- npm: pm2 and the app's dependencies ------------------------------------
if [ ! -f lab/node_modules/.package-lock.json ] || ! cmp -s lab/package-lock.json lab/node_modules/.akig-lock; then
  log "npm ci --prefix lab"
  npm ci --prefix lab --no-audit --no-fund --loglevel=error
  cp lab/package-lock.json lab/node_modules/.akig-lock
fi

# --- ansible-test sanity runs offline: a stand-in for its pip bootstrap download ---
for v in 24.2; do
  cache=~/.ansible/test/cache/get_pip_${v//./_}.py
  mkdir -p "$(dirname "$cache")"
  cp tests/sanity/get_pip_standin.py "$cache"
done

log "ready: $(.venv/bin/ansible --version | sed -n 1p), node $(node --version), pm2 $(node -p "require('./lab/node_modules/pm2/package.json').version")"
