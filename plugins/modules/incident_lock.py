#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: incident_lock
short_description: Make sure only one destructive runbook acts on an environment at a time
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - Takes, refreshes, releases, breaks or inspects the B(incident lock) of an environment. A runbook
    takes it before it changes anything and releases it at the end, so two runs of the same runbook,
    or two destructive runbooks, never act on the same environment at once.
  - The lock records who holds it (runbook, incident id, controller host, pid of the
    C(ansible-playbook) process, start time, TTL) and carries a B(fencing token), a number per
    environment that only ever grows. Release and refresh must present the token, so a run never
    deletes or extends a lock that is not its own.
  - With O(backend=redis) (the default, for shared controllers such as AWX) the lock is the Redis
    key C(akig:incident-lock:<environment>), set with C(SET NX PX) semantics by a Lua script that
    also increments the token counter C(akig:incident-lock:<environment>:fence). Release and refresh
    are compare-and-delete and compare-and-pexpire scripts that check the token. An expired key is
    simply free.
  - With O(backend=file) (a single controller) the lock is the JSON file
    C(<lock_dir>/<environment>.lock), created exclusively, next to C(<environment>.fence) (token
    counter) and C(<environment>.guard) (an C(flock) that serialises changes).
  - A lock is B(stale) when its TTL has run out (file backend) or when its holder ran on this very
    controller host and its pid no longer exists (both backends). A stale lock is only broken on
    request (O(break_stale=true) or O(state=absent)), and the break is reported in RV(broken).
  - Run it on the controller, once per play (C(delegate_to=localhost) and C(run_once=true) on the
    task); the C(acquire) and C(release) entry points of the role C(akig.runbooks.incident_lock) do
    that.
  - See C(docs/incident-lock.md) in the collection for the design and the operator's guide.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would happen in RV(actions) and changes nothing. An acquire that would
      wait or fail because the lock is held does not fail in check mode; it returns RV(held_by) and
      RV(would_block=true) instead, and does not wait.
  diff_mode:
    support: full
    details: The holder record before and after.
  platform:
    platforms: posix
requirements:
  - redis (Python library, for O(backend=redis))
options:
  state:
    description:
      - V(acquired) takes the lock (waiting up to O(wait) seconds while someone else holds it) and
        returns its RV(token). Passing the O(token) of the lock already held makes it a no-op.
      - V(refreshed) resets the TTL of the lock holding O(token) to O(ttl) seconds from now; use it
        in long runs.
      - V(released) deletes the lock if it holds O(token); an already free lock is not an error.
      - V(absent) breaks the lock -- it removes a lock that holds O(token) or looks stale, and a live
        lock held by another run only with O(force_break=true).
      - V(query) reports who holds the lock and whether it looks stale; it never changes anything.
    type: str
    choices: [acquired, refreshed, released, absent, query]
    default: acquired
  environment:
    description:
      - The environment the lock protects, for example V(production). One lock per environment.
      - 1 to 63 letters, digits, V(.), V(_) or V(-), starting with a letter or digit.
    type: str
    required: true
  runbook:
    description:
      - Runbook id of this run, for example V(rb-p1-003-db-failover); recorded in the holder.
      - Required with O(state=acquired).
    type: str
  incident_id:
    description:
      - Incident this run works on, for example V(INC-2026-042); recorded in the holder.
    type: str
  backend:
    description:
      - Where the lock lives. V(redis) for controllers that share work (AWX, several operators),
        V(file) for a single controller.
    type: str
    choices: [redis, file]
    default: redis
  redis_host:
    description:
      - Redis server holding the locks. Required with O(backend=redis).
      - Use a Redis that no runbook flushes (not the application's cache database).
    type: str
  redis_port:
    description:
      - Port of the Redis server.
    type: int
    default: 6379
  redis_password:
    description:
      - Password of the Redis server. Never returned or logged.
    type: str
  redis_db:
    description:
      - Redis database number.
    type: int
    default: 0
  lock_dir:
    description:
      - Directory of the lock files with O(backend=file); created with mode 0700 when missing.
      - Must be on a local file system of the controller.
    type: path
    default: ~/.cache/akig-runbooks/locks
  ttl:
    description:
      - Seconds the lock lives unless refreshed (O(state=acquired) and O(state=refreshed)).
        Must be greater than 0.
    type: int
    default: 900
  wait:
    description:
      - Seconds O(state=acquired) waits for a lock held by someone else before it fails. V(0) fails
        at once.
    type: int
    default: 0
  poll_interval:
    description:
      - Seconds between two looks at a held lock while waiting. Must be greater than 0.
    type: float
    default: 0.5
  token:
    description:
      - Fencing token returned by O(state=acquired). Required with O(state=released) and
        O(state=refreshed); with O(state=acquired) it makes re-acquiring the lock already held a
        no-op; with O(state=absent) it removes this run's own lock.
    type: int
  break_stale:
    description:
      - With O(state=acquired), break a stale lock (TTL run out, or holder process dead on this
        controller host) and take it. The previous holder is returned in RV(broken).
      - Without it a stale lock is treated as held and the task fails saying it looks stale.
    type: bool
    default: false
  force_break:
    description:
      - With O(state=absent), remove the lock even when it looks alive. Only after you have
        confirmed the holder's run is dead. Only valid with O(state=absent).
    type: bool
    default: false
notes:
  - The holder pid is that of the C(ansible-playbook) (or C(ansible)) process of the run, found
    through Linux C(/proc). When it cannot be found (the module ran on a remote host, or the
    controller has no C(/proc)) it is recorded as V(null) and only the TTL makes the lock stale.
  - Redis Cluster is not supported (the lock and fence keys are used by one script); a standalone
    Redis or a Sentinel primary is.
  - A failure message names the holder and what to do next; it never contains the Redis password.
seealso:
  - name: Incident lock design and operator's guide
    description: docs/incident-lock.md in the akig.runbooks collection.
    link: https://git.akig.example/sre/akig.runbooks/-/blob/main/docs/incident-lock.md
"""

EXAMPLES = r"""
- name: Take the production incident lock before failing over the database
  akig.runbooks.incident_lock:
    environment: production
    runbook: rb-p1-003-db-failover
    incident_id: "{{ akig_incident.id }}"
    redis_host: redis-locks.akig.internal
    redis_password: "{{ vault_akig_lock_redis_password }}"
    wait: 60
  delegate_to: localhost
  run_once: true
  register: __lock
  no_log: true

- name: Extend the lock during a long restore
  akig.runbooks.incident_lock:
    state: refreshed
    environment: production
    token: "{{ __lock.token }}"
    ttl: 1800
    redis_host: redis-locks.akig.internal
    redis_password: "{{ vault_akig_lock_redis_password }}"
  delegate_to: localhost
  run_once: true
  no_log: true

- name: Release the lock at the end of the run
  akig.runbooks.incident_lock:
    state: released
    environment: production
    token: "{{ __lock.token }}"
    redis_host: redis-locks.akig.internal
    redis_password: "{{ vault_akig_lock_redis_password }}"
  delegate_to: localhost
  run_once: true
  no_log: true

- name: Take the lab lock on a single controller, breaking the lock of a run that died
  akig.runbooks.incident_lock:
    environment: lab
    runbook: rb-p2-001-redis-sessions
    backend: file
    break_stale: true
  delegate_to: localhost
  run_once: true

- name: Show who holds the staging lock
  akig.runbooks.incident_lock:
    state: query
    environment: staging
    backend: file
  delegate_to: localhost
  run_once: true
  register: __lock_state

- name: Remove a lock whose run is confirmed dead on another controller
  akig.runbooks.incident_lock:
    state: absent
    environment: production
    force_break: true
    redis_host: redis-locks.akig.internal
    redis_password: "{{ vault_akig_lock_redis_password }}"
  delegate_to: localhost
  run_once: true
  no_log: true
"""

RETURN = r"""
environment:
  description: The environment of the lock.
  returned: always
  type: str
  sample: production
lock:
  description: Where the lock lives (Redis key and server, or lock file).
  returned: always
  type: str
  sample: redis key akig:incident-lock:production on redis-locks.akig.internal:6379 db 0
token:
  description:
    - Fencing token of the lock this run holds after O(state=acquired) or O(state=refreshed); pass
      it to O(state=released) and O(state=refreshed).
    - V(null) otherwise, and in check mode when the lock would be newly acquired.
  returned: always
  type: int
  sample: 42
holder:
  description:
    - The holder record of the lock this task acquired, refreshed or released (V(null) otherwise).
  returned: always
  type: dict
  contains:
    runbook:
      description: Runbook id of the holder.
      type: str
      sample: rb-p1-003-db-failover
    incident_id:
      description: Incident of the holder, or V(null).
      type: str
      sample: INC-2026-042
    controller_host:
      description: Host name of the controller that holds the lock.
      type: str
      sample: ctl-1
    pid:
      description: Pid of the holder's C(ansible-playbook) process on that host, or V(null).
      type: int
      sample: 4242
    started_at:
      description: When the lock was acquired, UTC ISO 8601.
      type: str
      sample: "2026-11-27T14:23:00Z"
    ttl:
      description:
        - TTL in seconds given at acquire; the file backend also records the TTL of the last refresh.
        - RV(holder.expires_at) always reflects the last refresh.
      type: int
      sample: 900
    expires_at:
      description: When the lock expires unless refreshed, UTC ISO 8601 (V(null) for no expiry).
      type: str
      sample: "2026-11-27T14:38:00Z"
    expires_in_s:
      description: Seconds left before it expires, as seen by this task (negative once expired).
      type: int
      sample: 812
    token:
      description: Fencing token of the lock.
      type: int
      sample: 42
  sample:
    runbook: rb-p1-003-db-failover
    incident_id: INC-2026-042
    controller_host: ctl-1
    pid: 4242
    started_at: "2026-11-27T14:23:00Z"
    ttl: 900
    expires_at: "2026-11-27T14:38:00Z"
    expires_in_s: 900
    token: 42
held_by:
  description:
    - Holder record (same fields as RV(holder)) of whoever holds the lock after the task; for
      O(state=query) and in check mode, the current holder. V(null) when the lock is free.
    - For a lock that cannot be parsed, a dict with the single key C(unreadable) saying why.
  returned: always
  type: dict
broken:
  description: Holder record of a stale or forcibly removed lock that this task broke, else V(null).
  returned: always
  type: dict
stale:
  description: Why the lock found looks stale (V(null) when it looks alive or is free).
  returned: always
  type: str
  sample: its process (pid 4242) no longer runs on ctl-1
would_block:
  description: In check mode, V(true) when O(state=acquired) would wait for or fail on a held lock.
  returned: always
  type: bool
  sample: false
actions:
  description: What the task did, or in check mode would do, in plain sentences.
  returned: always
  type: list
  elements: str
  sample:
    - Acquired the incident lock for environment 'production' for runbook rb-p1-003-db-failover with fencing token 42
      (redis key akig:incident-lock:production on redis-locks.akig.internal:6379 db 0, ttl 900 s).
waited_s:
  description: Seconds spent waiting for the lock.
  returned: always
  type: float
  sample: 0.0
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock import LockError, run
from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock_redis import HAS_REDIS, REDIS_IMPORT_ERROR

ARGUMENT_SPEC = dict(
    state=dict(type="str", default="acquired", choices=["acquired", "refreshed", "released", "absent", "query"]),
    environment=dict(type="str", required=True),
    runbook=dict(type="str"),
    incident_id=dict(type="str"),
    backend=dict(type="str", default="redis", choices=["redis", "file"]),
    redis_host=dict(type="str"),
    redis_port=dict(type="int", default=6379),
    redis_password=dict(type="str", no_log=True),
    redis_db=dict(type="int", default=0),
    lock_dir=dict(type="path", default="~/.cache/akig-runbooks/locks"),
    ttl=dict(type="int", default=900),
    wait=dict(type="int", default=0),
    poll_interval=dict(type="float", default=0.5),
    token=dict(type="int", no_log=False),
    break_stale=dict(type="bool", default=False),
    force_break=dict(type="bool", default=False),
)

REQUIRED_IF = [
    ("state", "acquired", ("runbook",)),
    ("state", "released", ("token",)),
    ("state", "refreshed", ("token",)),
    ("backend", "redis", ("redis_host",)),
]


# the AnsibleModule arguments, shared with the action plugin that runs the module in Ansible's worker on the controller
# (plugins/action/incident_lock.py)
MODULE_KWARGS = dict(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF, supports_check_mode=True)


def execute(module) -> None:
    """The module's work on an AnsibleModule (or the in-process stand-in of plugins/plugin_utils/in_process.py)."""
    if module.params["backend"] == "redis" and not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    try:
        result = run(module.params, check_mode=module.check_mode)
    except LockError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


def main() -> None:
    execute(AnsibleModule(**MODULE_KWARGS))


if __name__ == "__main__":
    main()
