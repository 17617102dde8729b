#!/usr/bin/env bash
# The whole akig.runbooks test suite, from a fresh Debian 12 machine:
#   setup (idempotent) -> unit tests -> ansible-lint -> ansible-test sanity
#   -> lab up -> lab tests (real PostgreSQL, Redis, pm2, Node, emulator) -> molecule -> lab down
# Usage: bash scripts/test.sh [--keep-lab] [--only unit|integration|lint|sanity|lab|molecule]
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
keep_lab=0; only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --keep-lab) keep_lab=1 ;;
    --only) only=$2; shift ;;
    *) echo "usage: $0 [--keep-lab] [--only unit|integration|lint|sanity|lab|molecule]" >&2; exit 2 ;;
  esac
  shift
done

bash scripts/setup.sh || { echo "[test] setup failed" >&2; exit 1; }
export PATH="$root/.venv/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
export PYTHONPATH="$root/.collections${PYTHONPATH:+:$PYTHONPATH}"
out="$root/tests/output"; rm -rf "$out"; mkdir -p "$out"
failed_steps=()
t_start=$SECONDS

step() {  # step NAME COMMAND...
  local name=$1; shift
  if [ -n "$only" ] && [ "$only" != "$name" ] && [[ "$name" != "$only"-* ]]; then return 0; fi
  local t0=$SECONDS
  echo; echo "=== [test] $name"
  if "$@"; then echo "=== [test] $name: ok ($((SECONDS - t0))s)"
  else echo "=== [test] $name: FAILED ($((SECONDS - t0))s)"; failed_steps+=("$name"); fi
}

lab_started=0
lab_up() {
  if lab/akig-lab status >/dev/null 2>&1; then return 0; fi
  lab_started=1
  local t0=$SECONDS
  lab/akig-lab up && echo "[test] lab up took $((SECONDS - t0))s"
}
lab_down() {
  if [ "$lab_started" = 1 ] && [ "$keep_lab" = 0 ]; then
    local t0=$SECONDS
    lab/akig-lab down && echo "[test] lab down took $((SECONDS - t0))s"
  fi
}
trap lab_down EXIT

# A copy of akig.runbooks installed in the user's collections path (ansible-galaxy collection
# install) would shadow this checkout for ansible-lint: move it aside, saying so.
shadow=~/.ansible/collections/ansible_collections/akig/runbooks
if [ -e "$shadow" ] && [ "$(readlink -f "$shadow")" != "$root" ]; then
  echo "[test] moving aside an installed copy of akig.runbooks that shadows this checkout: $shadow"
  mv "$shadow" "$shadow.shadowed.$(date +%s)"
fi

step unit pytest tests/unit -q -p no:cacheprovider --junitxml="$out/unit.xml"
step integration pytest tests/integration -q -p no:cacheprovider --junitxml="$out/integration.xml"
step lint ansible-lint --profile production --offline -q
step sanity bash scripts/sanity.sh
if [ -z "$only" ] || [ "$only" = lab ] || [ "$only" = molecule ]; then
  step lab-up lab_up
  step lab pytest tests/lab -q -p no:cacheprovider --junitxml="$out/lab.xml"
  step molecule bash scripts/molecule.sh
fi

echo
echo "[test] suite took $((SECONDS - t_start))s"
python3 scripts/summarize-junit.py "$out" "${failed_steps[@]+"${failed_steps[@]}"}"
[ ${#failed_steps[@]} -eq 0 ]
