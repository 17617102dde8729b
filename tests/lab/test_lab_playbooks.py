"""Playbooks run against the lab inventory with the local connection (over real SSH, with the
production-shaped inventory: test_lab_fqdn.py)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import FAULTS, REPO, LABCTL

ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"


def playbook(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ANSIBLE_PLAYBOOK), *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", **(env or {})})


def test_lab_health_reports_every_component(lab_up) -> None:
    proc = playbook("playbooks/lab-health.yml", "-e", "health_fail_on_unhealthy=true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for host, component in [("db-1", "postgresql"), ("db-2", "postgresql"), ("db-3", "postgresql"), ("cache-1", "redis"),
                            ("app-1", "backend"), ("app-2", "backend"), ("app-1", "frontend")]:
        assert any(line.strip().strip('",').startswith(host) and component in line and " OK " in line
                   for line in proc.stdout.splitlines()), (host, component, proc.stdout[-3000:])
    # no secret reaches the output
    for value in lab_up.values():
        assert value not in proc.stdout and value not in proc.stderr


def test_lab_up_refuses_a_port_taken_by_someone_else(lab_up, tmp_path: Path) -> None:
    """A second lab (another state folder) finds the addresses taken and says what to do."""
    proc = subprocess.run([str(LABCTL), "up"], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "AKIG_LAB_STATE": str(tmp_path / "state")})
    assert proc.returncode == 2
    assert "is already in use by" in proc.stderr and "akig-lab down" in proc.stderr


def test_lab_fault_playbook_validates_the_fault_name(lab_up) -> None:
    """The playbook's allowed names are the registry's, read through `lab/akig-lab faults --json`."""
    proc = playbook("playbooks/lab-fault.yml", "-e", "fault=disk_full")
    assert proc.returncode != 0
    assert "Unknown lab fault 'disk_full'" in proc.stdout
    allowed = proc.stdout.split("one of:", 1)[1].split(".", 1)[0]
    assert [n.strip() for n in allowed.split(",")] == [f["name"] for f in FAULTS] + ["clear"]


def test_lab_fault_playbook_refuses_a_non_lab_inventory(lab_up) -> None:
    proc = playbook("-i", "inventories/staging", "playbooks/lab-fault.yml", "-e", "fault=backend_crash")
    assert proc.returncode != 0
    assert "not the lab inventory (akig_environment=staging)" in proc.stdout
