#!/usr/bin/env bash
# ansible-test sanity for the collection. ansible-test wants the collection at
# .../ansible_collections/akig/runbooks, so the tracked files are copied there first.
# Offline: scripts/setup.sh put a stand-in for the pip bootstrap download in its cache.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d /tmp/akig-sanity.XXXXXX)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/akig/runbooks"
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard -- . ':!lab' ':!benchmarks' ':!.ci' ':!scripts' | \
  while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done | tar --null -T - -cf - | tar -xf - -C "$dest"
cd "$dest"
git init -q && git add -A && git -c user.email=ci@akig.example -c user.name=ci commit -qm sanity
"$root/.venv/bin/ansible-test" sanity --python 3.11 --venv --color no "$@"
