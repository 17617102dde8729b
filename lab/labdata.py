"""The lab's data, each written in one place and read from there by everyone.

- Topology: host -> address and groups, from the lab inventory (inventories/lab/hosts.yml),
  plus each host's production-shaped name from inventories/lab-fqdn/hosts.yml.
- Faults: the fault registry, lab/faults.yml.

labctl.py, the lab tests (tests/lab/conftest.py) and the benchmarks import this module
(it lives next to labctl.py; add lab/ to sys.path). It needs only PyYAML, which the
controller toolchain (.venv) has.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LAB_DIR = Path(__file__).resolve().parent
REPO = LAB_DIR.parent
LAB_INVENTORY = REPO / "inventories" / "lab" / "hosts.yml"
FQDN_INVENTORY = REPO / "inventories" / "lab-fqdn" / "hosts.yml"
FAULTS_FILE = LAB_DIR / "faults.yml"
FAULT_FIELDS = ("name", "breaks", "description", "inject", "clear")


class LabDataError(ValueError):
    """A lab data file is missing or malformed; the message names the file and what to fix."""


@dataclass(frozen=True)
class Topology:
    """The lab's hosts in inventory order, their addresses, groups and production-shaped names."""

    hosts: dict[str, str]
    groups: dict[str, list[str]]
    fqdns: dict[str, str] = field(default_factory=dict)

    def group(self, name: str) -> dict[str, str]:
        """Host -> address for the hosts of one group, in inventory order ({} if the group is empty)."""
        return {h: self.hosts[h] for h in self.groups.get(name, [])}

    def first(self, group: str) -> tuple[str, str]:
        """(host, address) of the first host of a group the lab cannot run without."""
        members = self.group(group)
        if not members:
            raise LabDataError(f"{LAB_INVENTORY}: group {group!r} has no host; the lab needs one")
        return next(iter(members.items()))

    @property
    def databases(self) -> dict[str, str]:
        """The PostgreSQL nodes: the initial primary first, then the replicas."""
        return {**self.group("pg_primary"), **self.group("pg_replica")}

    @property
    def app_hosts(self) -> dict[str, str]:
        return self.group("backend")

    @property
    def addresses(self) -> list[str]:
        return list(self.hosts.values())


def _walk(node: Any, group: str, path: Path, hosts: dict[str, dict[str, Any]],
          groups: dict[str, list[str]]) -> None:
    if node is None:
        return
    if not isinstance(node, dict):
        raise LabDataError(f"{path}: group {group!r} must be a mapping with 'hosts' and/or 'children'")
    members = groups.setdefault(group, [])
    for name, hostvars in (node.get("hosts") or {}).items():
        entry = hosts.setdefault(str(name), {})
        entry.update(hostvars or {})
        if name not in members:
            members.append(str(name))
    for child, sub in (node.get("children") or {}).items():
        _walk(sub, str(child), path, hosts, groups)
        for name in groups.get(str(child), []):
            if name not in members:
                members.append(name)


def read_inventory(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Hosts (with their variables) and groups of a YAML inventory, in file order."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LabDataError(f"cannot read the inventory {path}: {exc}") from exc
    if not isinstance(data, dict) or "all" not in data:
        raise LabDataError(f"{path}: expected a YAML inventory whose top level is 'all:'")
    hosts: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {}
    _walk(data["all"], "all", path, hosts, groups)
    return hosts, groups


def topology(inventory: Path = LAB_INVENTORY, fqdn_inventory: Path | None = FQDN_INVENTORY) -> Topology:
    """The lab topology. Every lab host needs an ansible_host (its loopback address); every host of the
    production-shaped inventory must be a lab host's name plus a domain (db-1 -> db-1.lab.akig.internal)."""
    hostvars, groups = read_inventory(inventory)
    hosts: dict[str, str] = {}
    for name, hvars in hostvars.items():
        addr = hvars.get("ansible_host")
        if not addr:
            raise LabDataError(f"{inventory}: host {name!r} has no ansible_host; give it its lab address")
        hosts[name] = str(addr)
    fqdns: dict[str, str] = {}
    if fqdn_inventory is not None and fqdn_inventory.exists():
        for fqdn in read_inventory(fqdn_inventory)[0]:
            short = fqdn.split(".", 1)[0]
            if short not in hosts or "." not in fqdn:
                raise LabDataError(f"{fqdn_inventory}: host {fqdn!r} is not a lab host name plus a domain "
                                   f"(lab hosts: {', '.join(hosts)})")
            fqdns[short] = fqdn
    return Topology(hosts=hosts, groups=groups, fqdns=fqdns)


def faults(path: Path = FAULTS_FILE) -> tuple[list[dict[str, str]], list[str]]:
    """The fault registry: (faults in file order, clear steps in the order `fault clear` runs them)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LabDataError(f"cannot read the fault registry {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("faults"), list):
        raise LabDataError(f"{path}: expected 'faults:' (a list) and 'clear_steps:'")
    steps = [str(s) for s in data.get("clear_steps") or []]
    out: list[dict[str, str]] = []
    for i, entry in enumerate(data["faults"]):
        if not isinstance(entry, dict):
            raise LabDataError(f"{path}: fault #{i + 1} must be a mapping with {', '.join(FAULT_FIELDS)}")
        missing = [k for k in FAULT_FIELDS if not entry.get(k)]
        if missing:
            raise LabDataError(f"{path}: fault {entry.get('name', f'#{i + 1}')!r} lacks {', '.join(missing)}")
        if entry["clear"] not in steps:
            raise LabDataError(f"{path}: fault {entry['name']!r} is cleared by {entry['clear']!r}, which is not "
                               f"in clear_steps ({', '.join(steps)})")
        out.append({k: str(entry[k]).strip() for k in FAULT_FIELDS})
    names = [f["name"] for f in out]
    dupes = sorted({n for n in names if names.count(n) > 1} | ({"clear"} & set(names)))
    if dupes:
        raise LabDataError(f"{path}: fault names must be unique and not 'clear': {', '.join(dupes)}")
    return out, steps
