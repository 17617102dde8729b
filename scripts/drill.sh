#!/usr/bin/env bash
# One command from a fresh Debian 12 clone: install everything, bring the AKIG lab up and run
# a runbook drill against it. Usage: bash scripts/drill.sh [--down]
#   --down   bring the lab down after the drill (default: leave it up to explore)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
lab/akig-lab up
ansible-playbook playbooks/lab-health.yml -i inventories/lab
if [ "${1:-}" = "--down" ]; then lab/akig-lab down; fi
