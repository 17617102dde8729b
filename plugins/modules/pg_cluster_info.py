#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_cluster_info
short_description: Read the replication state of several PostgreSQL nodes at once, in one task
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - Reads every node of O(nodes) concurrently (one thread per node) and returns, per node, exactly what
    M(akig.runbooks.pg_replication_info) returns for it - role, recovery, LSNs, lag, WAL receiver, replicas, slots,
    state and probes. A node that is down is a result (C(reachable=false)), not a failure.
  - One task instead of one per node - runbook RB-P1-003 reads the cluster before and after the failover, on its
    critical path, where each Ansible task costs 0.3-0.6 s; with three nodes this saves about a second each time.
  - A node that cannot be read for another reason than being down (authentication, C(pg_hba.conf), a bad
    O(nodes[].primary_lsn)) is listed in RV(unreadable) with the module's message; the task fails only with
    O(fail_on_error=true).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads, so check mode returns the same information.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - psycopg2
options:
  nodes:
    description:
      - The nodes to read. Names must be unique.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the node in the result (its inventory name).
        type: str
        required: true
      host:
        description: Host name or IP address PostgreSQL listens on.
        type: str
        required: true
      port:
        description: Port PostgreSQL listens on.
        type: int
        default: 5432
      attempts:
        description: Probes of this node, as O(akig.runbooks.pg_replication_info#module:attempts).
        type: int
        default: 1
      attempt_interval:
        description: Seconds between two probes of this node.
        type: float
        default: 1.0
      primary_lsn:
        description: As O(akig.runbooks.pg_replication_info#module:primary_lsn), for this node.
        type: str
  login_user:
    description: The role to log in as on every node (a superuser or a member of C(pg_monitor)).
    type: str
    default: postgres
  login_password:
    description: Its password. Never returned or logged.
    type: str
  login_db:
    description: Database to connect to.
    type: str
    default: postgres
  connect_timeout:
    description: Seconds to wait for each connection.
    type: int
    default: 3
  fail_on_error:
    description: Fail the task when a node is in RV(unreadable) (a node that is down is not a failure).
    type: bool
    default: false
notes:
  - A member of the action group C(akig.runbooks.postgres), so C(module_defaults) can set O(login_user) and
    O(login_password) once for every PostgreSQL module.
seealso:
  - module: akig.runbooks.pg_replication_info
"""

EXAMPLES = r"""
- name: Read the three database nodes at once
  akig.runbooks.pg_cluster_info:
    nodes:
      - {name: db-1, host: 10.0.2.11, attempts: 3, attempt_interval: 0.5}
      - {name: db-2, host: 10.0.2.12}
      - {name: db-3, host: 10.0.2.13}
    login_user: postgres
    login_password: "{{ vault_akig_pg_superuser_password }}"
  register: cluster
  no_log: true

- name: Which nodes accept writes?
  ansible.builtin.debug:
    msg: "{{ cluster.nodes | dict2items | selectattr('value.accepts_writes') | map(attribute='key') | list }}"
"""

RETURN = r"""
nodes:
  description:
    - Per node name, the result of M(akig.runbooks.pg_replication_info) for it (see that module's return values),
      for every node that could be read or was found down.
  returned: always
  type: dict
  sample:
    db-1: {reachable: true, role: primary, in_recovery: false, accepts_writes: true, state: up, timeline: 1}
    db-2: {reachable: true, role: standby, in_recovery: true, accepts_writes: false, state: in_recovery}
unreadable:
  description: Per node name, why it could not be read (the message never holds a password).
  returned: always
  type: dict
  sample:
    db-3: "authentication failed for user postgres on 10.0.2.13:5432: check login_user / login_password"
seconds:
  description: Wall-clock seconds the reads took (they run concurrently).
  returned: always
  type: float
  sample: 0.08
"""

import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import HAS_PSYCOPG2, PSYCOPG2_IMPORT_ERROR, PgError, run_info

ARGUMENT_SPEC = dict(
    nodes=dict(type="list", elements="dict", required=True, options=dict(
        name=dict(type="str", required=True),
        host=dict(type="str", required=True),
        port=dict(type="int", default=5432),
        attempts=dict(type="int", default=1),
        attempt_interval=dict(type="float", default=1.0),
        primary_lsn=dict(type="str"),
    )),
    login_user=dict(type="str", default="postgres"),
    login_password=dict(type="str", no_log=True),
    login_db=dict(type="str", default="postgres"),
    connect_timeout=dict(type="int", default=3),
    fail_on_error=dict(type="bool", default=False),
)


def read_nodes(params):
    """Read every node concurrently; returns (nodes, failed, seconds)."""
    started = time.monotonic()
    nodes, unreadable = {}, {}

    def one(node):
        node_params = dict(login_host=node["host"], login_port=node["port"], login_user=params["login_user"],
                           login_password=params.get("login_password"), login_db=params["login_db"],
                           connect_timeout=params["connect_timeout"], attempts=node["attempts"],
                           attempt_interval=node["attempt_interval"], primary_lsn=node.get("primary_lsn"))
        try:
            return node["name"], run_info(node_params), None
        except PgError as exc:
            return node["name"], None, exc.msg

    with ThreadPoolExecutor(max_workers=max(1, len(params["nodes"]))) as pool:
        for name, result, error in pool.map(one, params["nodes"]):
            if error is None:
                result.pop("changed", None)
                nodes[name] = result
            else:
                unreadable[name] = error
    return nodes, unreadable, round(time.monotonic() - started, 3)


# the AnsibleModule arguments, shared with the action plugin that runs the module in Ansible's worker on the controller
# (plugins/action/pg_cluster_info.py)
MODULE_KWARGS = dict(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)


def execute(module) -> None:
    """The module's work on an AnsibleModule (or the in-process stand-in of plugins/plugin_utils/in_process.py)."""
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)
    names = [node["name"] for node in module.params["nodes"]]
    if not names:
        module.fail_json(msg="nodes is empty: give at least one node (name, host, port) to read")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        module.fail_json(msg="nodes names must be unique; repeated: %s" % ", ".join(duplicates))
    for node in module.params["nodes"]:
        if not 1 <= node["port"] <= 65535:
            module.fail_json(msg="nodes[%s].port must be between 1 and 65535, got %d" % (node["name"], node["port"]))
    nodes, unreadable, seconds = read_nodes(module.params)
    result = dict(changed=False, nodes=nodes, unreadable=unreadable, seconds=seconds)
    if unreadable and module.params["fail_on_error"]:
        module.fail_json(msg="cannot read %s: %s" % (", ".join(sorted(unreadable)), "; ".join(
            "%s: %s" % (name, unreadable[name]) for name in sorted(unreadable))), **result)
    module.exit_json(**result)


def main() -> None:
    execute(AnsibleModule(**MODULE_KWARGS))


if __name__ == "__main__":
    main()
