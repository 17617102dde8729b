"""The lab shaped like production (inventories/lab-fqdn): hosts by name through the controller's
resolver (/etc/hosts), real SSH through the lab's sshd as akig-ops with sudo, secrets from an
ansible-vault file encrypted with the lab's own password."""
from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

import labctl as lab_controller  # lab/labctl.py (conftest puts lab/ on sys.path)
from conftest import REPO, STATE, labctl, read_secrets

FQDN = REPO / "inventories" / "lab-fqdn"
PRODUCTION = REPO / "inventories" / "production"
VAULT_FILE = FQDN / "group_vars" / "all" / "vault.yml"
VAULT_PASS = STATE / "vault-pass"
BIN = REPO / ".venv" / "bin"
BEGIN, END = "# BEGIN akig-lab", "# END akig-lab"


def ansible(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """An ansible command against the production-shaped inventory, as the README says to run it."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT_PASS),
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("SSH_CONNECTION", None)  # a controller reached over SSH must not look like a lab host
    return subprocess.run([str(BIN / tool), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def adhoc_lines(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """host -> the first output line of an ad-hoc command ("host | CHANGED | rc=0 >>" then the output)."""
    out, lines = {}, proc.stdout.splitlines()
    for i, line in enumerate(lines):
        if " | CHANGED | rc=0" in line and i + 1 < len(lines):
            out[line.split(" | ")[0]] = lines[i + 1].strip()
    return out


def no_secret_in(*texts: str) -> None:
    for name, value in read_secrets().items():
        assert all(value not in text for text in texts), f"the secret {name} appears in the output"


# --------------------------------------------------------------------------- the inventory itself

def test_the_inventory_is_shaped_like_production(topology) -> None:
    fqdn_vars = yaml.safe_load((FQDN / "group_vars" / "all" / "main.yml").read_text())
    prod_vars = yaml.safe_load((PRODUCTION / "group_vars" / "all" / "main.yml").read_text())
    hostvars = lab_controller.labdata.read_inventory(FQDN / "hosts.yml")[0]
    assert all(not v for v in hostvars.values()) and "ansible_host" not in fqdn_vars  # names, no addresses
    assert sorted(topology.fqdns) == sorted(topology.hosts)  # every lab host has its production-style name
    assert all(f == f"{short}.lab.akig.internal" for short, f in topology.fqdns.items())
    prod_groups = {g for g in lab_controller.labdata.read_inventory(PRODUCTION / "hosts.yml")[1] if g != "all"}
    fqdn_groups = {g for g in lab_controller.labdata.read_inventory(FQDN / "hosts.yml")[1] if g != "all"}
    assert fqdn_groups == prod_groups | {"saas"}  # saas: the lab's emulator of the external APIs
    for key in ("ansible_user", "ansible_become"):
        assert fqdn_vars[key] == prod_vars[key]
    assert fqdn_vars["ansible_connection"] == "ssh"
    assert fqdn_vars["akig_environment"] == "lab"
    # the same secrets, by the same vault variable names
    refs = [set(re.findall(r"vault_akig_\w+", (inv / "group_vars" / "all" / "main.yml").read_text()))
            for inv in (FQDN, PRODUCTION)]
    assert refs[0] == refs[1] and len(refs[0]) >= 10


@pytest.mark.parametrize("text", [
    "127.0.0.1 localhost\n",
    "127.0.0.1 localhost\n# akig-lab is mentioned here but is no block\n::1 ip6-localhost\n",
    "127.0.0.1 localhost",  # no final newline
    "",
])
def test_the_hosts_block_is_idempotent_and_touches_no_other_line(text: str) -> None:
    entries = {"db-1.lab.akig.internal": "127.0.0.11", "app-1.lab.akig.internal": "127.0.0.21"}
    once = lab_controller.with_hosts_block(text, entries)
    assert lab_controller.with_hosts_block(once, entries) == once
    assert once.count(BEGIN) == 1 and once.count(END) == 1
    assert "127.0.0.11 db-1.lab.akig.internal\n" in once
    removed = lab_controller.without_hosts_block(once)
    assert removed.splitlines() == text.splitlines()
    assert lab_controller.without_hosts_block(removed) == removed


def test_an_unterminated_hosts_block_is_refused_not_guessed() -> None:
    with pytest.raises(lab_controller.LabError, match="without '# END akig-lab'"):
        lab_controller.without_hosts_block(f"127.0.0.1 localhost\n{BEGIN}\n127.0.0.11 db-1\n10.0.0.1 other\n")


# --------------------------------------------------------------------------- against the running lab

def test_each_name_resolves_to_its_lab_address(lab_up, topology) -> None:
    text = Path("/etc/hosts").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    for short, fqdn in topology.fqdns.items():
        assert socket.gethostbyname(fqdn) == topology.hosts[short], fqdn
        assert {ai[4][0] for ai in socket.getaddrinfo(fqdn, 22, socket.AF_INET)} == {topology.hosts[short]}


def test_the_vault_is_encrypted_with_the_labs_own_password(lab_up) -> None:
    raw = VAULT_FILE.read_text()
    assert raw.startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    no_secret_in(raw)
    assert stat.S_IMODE(VAULT_PASS.stat().st_mode) == 0o600
    assert stat.S_IMODE(VAULT_FILE.stat().st_mode) == 0o600
    proc = ansible("ansible-vault", "view", str(VAULT_FILE))
    assert proc.returncode == 0, proc.stderr
    values = yaml.safe_load(proc.stdout)
    names = yaml.safe_load((PRODUCTION / "group_vars" / "all" / "vault.yml.example").read_text())
    assert list(values) == list(names)  # the production vault's names, in its order
    secrets = read_secrets()
    assert values == {n: secrets[n.removeprefix("vault_akig_")] for n in names}
    assert subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(VAULT_FILE)], check=False).returncode == 0


def test_hosts_are_reached_over_ssh_as_akig_ops_who_becomes_root(lab_up, topology) -> None:
    # raw: no Python on the far side (the controller's venv Python is root-only, hence become)
    proc = ansible("ansible", "all", "-i", "inventories/lab-fqdn", "-e", "ansible_become=false",
                   "-m", "ansible.builtin.raw", "-a", 'echo "$(id -un) $SSH_CONNECTION"')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    seen = adhoc_lines(proc)
    assert sorted(seen) == sorted(topology.fqdns.values())
    for short, fqdn in topology.fqdns.items():
        user, *conn = seen[fqdn].split()
        assert user == "akig-ops" and conn[2:] == [topology.hosts[short], "22"], seen[fqdn]
    proc = ansible("ansible", "pg_primary", "-i", "inventories/lab-fqdn", "-m", "ansible.builtin.command",
                   "-a", "id -un")
    assert proc.returncode == 0 and set(adhoc_lines(proc).values()) == {"root"}, proc.stdout[-2000:]


def test_the_controller_plays_stay_local(lab_up) -> None:
    """group_vars say ssh for the lab hosts; the implicit localhost keeps the local connection."""
    proc = ansible("ansible", "localhost", "-i", "inventories/lab-fqdn", "-m", "ansible.builtin.shell",
                   "-a", 'echo "conn=${SSH_CONNECTION:-none}"', "-e", "ansible_become=false")
    assert proc.returncode == 0 and adhoc_lines(proc) == {"localhost": "conn=none"}, proc.stdout[-2000:]


def test_lab_health_over_ssh_shows_every_component_ok(lab_up, topology) -> None:
    proc = ansible("ansible-playbook", "-i", "inventories/lab-fqdn", "playbooks/lab-health.yml",
                   "-e", "health_fail_on_unhealthy=true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    expected = [("db-1", "postgresql"), ("db-2", "postgresql"), ("db-3", "postgresql"), ("cache-1", "redis"),
                ("app-1", "backend"), ("app-2", "backend"), ("app-1", "frontend")]
    for short, component in expected:
        host = topology.fqdns[short]
        assert any(line.strip().strip('",').startswith(host + " ") and f" {component} " in line and " OK " in line
                   for line in proc.stdout.splitlines()), (host, component, proc.stdout[-3000:])
    no_secret_in(proc.stdout, proc.stderr)


def test_down_removes_the_hosts_block_and_nothing_else(lab_up, topology) -> None:
    before = Path("/etc/hosts").read_text()
    others = lab_controller.without_hosts_block(before).splitlines()
    try:
        labctl("down", timeout=300)
        after = Path("/etc/hosts").read_text()
        assert BEGIN not in after and END not in after
        assert not any(f in after for f in topology.fqdns.values())
        assert after.splitlines() == others
        labctl("down", timeout=300)  # idempotent
        assert Path("/etc/hosts").read_text() == after
    finally:
        labctl("up", timeout=300)
    assert Path("/etc/hosts").read_text().count(BEGIN) == 1
    assert socket.gethostbyname(topology.fqdns["db-1"]) == topology.hosts["db-1"]
