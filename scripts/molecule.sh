#!/usr/bin/env bash
# Run every molecule scenario against the running lab (default driver, no Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
rc=0
for scenario in molecule/*/molecule.yml; do
  name=$(basename "$(dirname "$scenario")")
  echo "--- molecule test -s $name"
  molecule test -s "$name" || rc=1
done
exit $rc
