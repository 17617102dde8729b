#!/usr/bin/env bash
# The whole akig.runbooks test suite, from a fresh Debian 12 machine:
#   setup (idempotent) -> unit tests (in parallel) -> unit tests that start processes -> integration
#   -> ansible-lint -> ansible-test sanity -> lab up -> lab tests (real PostgreSQL, Redis, pm2, Node,
#   emulator) -> molecule -> lab down, then a table of each stage's duration and result.
# Usage: bash scripts/test.sh [--keep-lab] [--reuse-lab] [--only unit|unit-process|integration|lint|sanity|lab|molecule]
#   --only unit       both unit lanes (unit: no process started, pytest-xdist; unit-process: the rest)
#   --keep-lab        leave the lab this run started up at the end
#   --reuse-lab       run the lab tests against a lab that is already running (they inject faults into it
#                     and reset it: its data and secrets are replaced); without it such a lab is refused
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
usage="usage: $0 [--keep-lab] [--reuse-lab] [--only unit|unit-process|integration|lint|sanity|lab|molecule]"
keep_lab=0; reuse_lab=0; only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --keep-lab) keep_lab=1 ;;
    --reuse-lab) reuse_lab=1 ;;
    --only)
      case "${2:-}" in
        unit|unit-process|integration|lint|sanity|lab|molecule) only=$2; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
      esac ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done

out="$root/tests/output"; rm -rf "$out"; mkdir -p "$out"
stages="$out/stages.tsv"  # name, result, seconds: read by scripts/summarize-junit.py
: > "$stages"
failed_steps=()

now_ds() { local ns; ns=$(date +%s%N); echo $((ns / 100000000)); }  # tenths of a second
t_start=$(now_ds)
record() {  # record NAME RESULT T0_DS
  local ds=$(( $(now_ds) - $3 ))
  printf '%s\t%s\t%d.%d\n' "$1" "$2" $((ds / 10)) $((ds % 10)) >> "$stages"
}
selected() {  # selected NAME: does --only select this step?
  [ -z "$only" ] || [ "$only" = "$1" ] || [[ "$1" == "$only"-* ]]
}
step() {  # step NAME COMMAND...: run it when --only selects it
  selected "$1" || return 0
  run_step "$@"
}
run_step() {  # run_step NAME COMMAND...
  local name=$1; shift
  local t0; t0=$(now_ds)
  echo; echo "=== [test] $name"
  if "$@"; then
    echo "=== [test] $name: ok"; record "$name" ok "$t0"
  else
    echo "=== [test] $name: FAILED"; record "$name" FAILED "$t0"; failed_steps+=("$name")
  fi
}
skip() {  # skip NAME REASON
  selected "$1" || return 0
  echo; echo "=== [test] $1: not run ($2)"
  printf '%s\t%s\t-\n' "$1" "not run: $2" >> "$stages"
  failed_steps+=("$1")
}

# --- the lab: only one per machine, and the lab tests destroy its state (faults, resets) ---
lab_started=0; lab_ready=0; lab_stopped=0
lab_running() {  # any lab component answering, healthy or not
  lab/akig-lab status --json 2>/dev/null | python3 -c '
import json, sys
try:
    status = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
sys.exit(0 if any(v.get("ok") or v.get("running") for k, v in status.items() if k != "faults") else 1)'
}
lab_up() {
  if lab_running; then
    if [ "$reuse_lab" = 1 ]; then
      echo "[test] reusing the lab that is already running (--reuse-lab): the lab tests will inject faults and reset it"
      lab_ready=1
      return 0
    fi
    echo "[test] ERROR: a lab is already running on this machine, and this run did not start it (someone's" \
         "drill, another test run, a lab left up with --keep-lab). The lab tests inject faults into the lab and" \
         "reset it, replacing its data and secrets. If nobody needs it, stop it (lab/akig-lab down) and run again;" \
         "to run the lab tests against it anyway, add --reuse-lab." >&2
    return 1
  fi
  lab_started=1
  lab/akig-lab up && lab_ready=1
}
lab_down() {
  if [ "$lab_started" = 1 ] && [ "$keep_lab" = 0 ] && [ "$lab_stopped" = 0 ]; then
    lab_stopped=1
    lab/akig-lab down
  fi
}
trap lab_down EXIT
lab_tests() {  # the lab tests print their reset times; the log keeps them for the stage table
  pytest tests/lab -q -p no:cacheprovider --junitxml="$out/lab.xml" 2>&1 | tee "$out/lab.log"
}

run_step setup bash scripts/setup.sh
if [ ${#failed_steps[@]} -gt 0 ]; then echo "[test] setup failed" >&2; exit 1; fi
export PATH="$root/.venv/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
export PYTHONPATH="$root/.collections${PYTHONPATH:+:$PYTHONPATH}"
export HYPOTHESIS_PROFILE=ci  # tests/conftest.py: derandomized, no deadline, no example database

# A copy of akig.runbooks installed in the user's collections path (ansible-galaxy collection
# install) would shadow this checkout for ansible-lint: move it aside, saying so.
shadow=~/.ansible/collections/ansible_collections/akig/runbooks
if [ -e "$shadow" ] && [ "$(readlink -f "$shadow")" != "$root" ]; then
  echo "[test] moving aside an installed copy of akig.runbooks that shadows this checkout: $shadow"
  mv "$shadow" "$shadow.shadowed.$(date +%s)"
fi

pytest_args=(-q -p no:cacheprovider)
# tests/unit: the tests that start no process, in parallel; tests/unit/conftest.py fails one that does
step unit pytest tests/unit "${pytest_args[@]}" -m "not process" -n auto --junitxml="$out/unit.xml"
# the unit tests marked `process` (PostgreSQL test cluster, redis-server, ansible, pm2, node): one at a
# time (measured: two workers, each building its own cluster, took 45 s instead of 35 s).
step unit-process pytest tests/unit "${pytest_args[@]}" -m process --junitxml="$out/unit-process.xml"
# the integration tests: two workers, a file per worker (--dist loadfile). The PostgreSQL test cluster
# takes its addresses from the worker (tests/support/pg_cluster.py); node_restart's fixed 127.0.0.96-97
# are used by one file only. Measured: 154 s one at a time, 99 s on two workers.
step integration pytest tests/integration "${pytest_args[@]}" -n 2 --dist loadfile --junitxml="$out/integration.xml"
step lint ansible-lint --profile production --offline -q
step sanity bash scripts/sanity.sh
if selected lab || selected molecule; then
  run_step lab-up lab_up
  if [ "$lab_ready" = 1 ]; then
    step lab lab_tests
    step molecule bash scripts/molecule.sh
  else
    skip lab "no lab"
    skip molecule "no lab"
  fi
  if [ "$lab_started" = 1 ] && [ "$keep_lab" = 0 ]; then run_step lab-down lab_down; fi
fi

record suite "$([ ${#failed_steps[@]} -eq 0 ] && echo ok || echo FAILED)" "$t_start"
echo
python3 scripts/summarize-junit.py "$out" "${failed_steps[@]+"${failed_steps[@]}"}"
[ ${#failed_steps[@]} -eq 0 ]
