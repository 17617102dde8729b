#!/usr/bin/env bash
# One command from a fresh Debian 12 clone: install everything, bring the AKIG lab up and run
# the RB-P1-003 drill against it:
#   1. crash the primary (db_primary_down: its postmaster is SIGKILLed)
#   2. RB-P1-003 fails over to the replica, repoints the app, measures RTO/RPO
#   3. the old primary rejoins as a replica (pg_rewind)
#   4. a planned switchback (RB-P1-003 again, db-2 -> db-1) and a second rejoin restore the baseline
# Usage: bash scripts/drill.sh [--down]     (--down: stop the lab afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg" ANSIBLE_FORCE_COLOR=0
lab/akig-lab up
if ! lab/akig-lab status --json | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["db-1"].get("role") != "primary")'; then
  echo "[drill] db-1 is not the primary (an earlier drill or failover): resetting the lab to its baseline"
  lab/akig-lab reset
fi
log=$(mktemp -d)/drill
run() {  # run NAME ARGS... : run a playbook, keep its output, print its figures
  local name=$1; shift
  echo "[drill] $name"
  if ! ansible-playbook "$@" > "$log.$name.log" 2>&1; then
    tail -n 40 "$log.$name.log"; echo "[drill] $name FAILED (full log: $log.$name.log)"; exit 1
  fi
  grep -h -o '"[a-z0-9-]* \(resolved\|handed over to [a-z0-9-]*\|failed\) — .*"' "$log.$name.log" | tr -d '"' | sed 's/^/[drill]   /' || true
}
lab/akig-lab fault db_primary_down
run failover playbooks/rb-p1-003-db-failover.yml -e rb_p1_003_strategy=failover
run rejoin playbooks/pg-rejoin.yml
run switchback playbooks/rb-p1-003-db-failover.yml -e rb_p1_003_strategy=failover \
  -e pg_failover_primary=db-2 -e pg_failover_candidate=db-1
run rejoin-back playbooks/pg-rejoin.yml -e pg_failover_primary=db-2 -e pg_failover_new_primary=db-1
ansible-playbook playbooks/lab-health.yml | sed -n '/Show one line per component/,/PLAY RECAP/p' | grep -E 'OK|KO' | tr -d '",' | sed 's/^ */[drill]   /'
echo "[drill] incident timelines and reports: artifacts/incidents/"
if [ "${1:-}" = "--down" ]; then lab/akig-lab down; fi
