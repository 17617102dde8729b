#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: secret_fingerprint
short_description: Keyed fingerprints of a secret as the running processes and the env files on this host hold it
version_added: 0.2.0
author: AKIG Engineering Team (@akig)
description:
  - Reads the value of one variable (for example C(JWT_SECRET)) on the host, from the environment of the running
    processes (C(/proc/PID/environ)) and from env files (the current one, the last good backup), and returns for
    each only C(HMAC-SHA256(key, value)) cut to 16 hex digits. The value itself never leaves the module.
  - The O(key) is generated on the controller for one run (RB-P1-002 generates it with no_log), so the
    fingerprints can be compared with each other across hosts during that run and are worthless afterwards.
  - When the processes do not carry the variable in their environment (the AKIG backend reads its env file at
    boot), the module matches the unkeyed fingerprints the app reports about itself (O(app_fingerprints), the
    C(jwt_fingerprint) of C(GET /api/health)) against the files' values, and says which file the running secret
    came from, or that it matches none of them.
  - Env files are read as the AKIG backend reads them (C(export), quotes, comments; the last line wins).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Read-only; check mode returns the same result.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  name:
    description: The variable holding the secret.
    type: str
    default: JWT_SECRET
  key:
    description:
      - The HMAC key of this run. Generate it on the controller for each run and never store it.
    type: str
    required: true
  files:
    description:
      - Env files to read, a mapping label to path, for example C(file) to the current env file and C(backup) to its last good copy.
      - A file that is missing or unreadable fails the task naming its label and path.
    type: dict
    default: {}
  pids:
    description: Processes whose environment to read (for example the pids of C(akig-backend) from the pm2 module).
    type: list
    elements: int
    default: []
  app_fingerprints:
    description:
      - Unkeyed fingerprints (first hex digits of SHA-256) of the secret as the running app reports them. Used
        only when no process carries O(name) in its environment.
    type: list
    elements: str
    default: []
  health_url:
    description:
      - URL of the app's health endpoint (C(GET /api/health)) whose C(jwt_fingerprint) is added to
        O(app_fingerprints); asked O(health_samples) times so that several cluster instances answer.
    type: str
  health_samples:
    description: Requests to O(health_url).
    type: int
    default: 4
"""

EXAMPLES = r"""
- name: Fingerprint the running JWT secret, the env file and its last good backup
  akig.runbooks.secret_fingerprint:
    key: "{{ run_key }}"
    files:
      file: /srv/akig/shared/.env
      backup: /srv/akig/shared/backups/.env.deploy-41
    pids: [4101, 4102]
    health_url: http://10.0.1.21:4000/api/health
  no_log: false  # the result holds fingerprints only; the key option is no_log in the module
  register: fp
"""

RETURN = r"""
fingerprints:
  description: Label of each of O(files) to the fingerprint of its value (V(null) when the file has no such line).
  returned: always
  type: dict
  sample: {file: 3f1a9c0be2d4e871, backup: 3f1a9c0be2d4e871}
running:
  description: The secret the processes run with.
  returned: always
  type: dict
  contains:
    fingerprint:
      description: Its fingerprint, V(null) when it could not be told.
      type: str
    source:
      description: >-
        V(environ) (read from the processes' environment), V(app) (the app's own fingerprint matches the file
        named in RV(running.matches)), V(unknown) (the app's fingerprint matches none of the files) or V(none)
        (nothing to read: no pid carries it and no app fingerprint was given).
      type: str
    matches:
      description: Labels of O(files) whose value is the running secret.
      type: list
      elements: str
    mixed:
      description: True when the processes do not all run the same secret.
      type: bool
"""

import json
import os
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.akig.runbooks.plugins.module_utils.auth_recovery import (
    EnvFileError,
    env_value,
    environ_value,
    hmac_fingerprint,
    sha256_prefix,
)


def read_file(module, label, path):
    if not os.path.isfile(path):
        module.fail_json(msg="The %s env file %s does not exist: give an existing file (for the backup, the last good "
                             "copy under shared/backups/). Nothing was changed." % (label, path))
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg="The %s env file %s cannot be read (%s): check its owner and mode. Nothing was changed."
                             % (label, path, exc.__class__.__name__))
    return None


def health_fingerprints(url, samples):
    """The ``jwt_fingerprint`` values the app's instances report (no proxy; an unanswered request adds nothing)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    found = []
    for _sample in range(max(samples, 0)):
        try:
            with opener.open(url, timeout=3) as resp:
                body = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read() or b"{}")
            except ValueError:
                continue
        except (urllib.error.URLError, OSError, ValueError):
            continue
        value = body.get("jwt_fingerprint") if isinstance(body, dict) else None
        if isinstance(value, str) and value:
            found.append(value)
    return found


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", default="JWT_SECRET"),
            key=dict(type="str", required=True, no_log=True),
            files=dict(type="dict", default={}),
            pids=dict(type="list", elements="int", default=[]),
            app_fingerprints=dict(type="list", elements="str", default=[]),
            health_url=dict(type="str"),
            health_samples=dict(type="int", default=4),
        ),
        supports_check_mode=True,
    )
    name, key = module.params["name"], module.params["key"]
    if not key:
        module.fail_json(msg="key is empty: generate a random key on the controller for this run.")
    values = {}
    for label, path in (module.params["files"] or {}).items():
        text = read_file(module, label, str(path))
        try:
            values[label] = env_value(text, name)
        except EnvFileError as exc:
            module.fail_json(msg="The %s env file %s cannot be read with certainty: %s. Nothing was changed."
                                 % (label, path, exc))
    fingerprints = {label: (hmac_fingerprint(key, v) if v is not None else None) for label, v in values.items()}

    app_fingerprints = list(module.params["app_fingerprints"])
    if module.params["health_url"]:
        app_fingerprints += health_fingerprints(module.params["health_url"], module.params["health_samples"])

    from_environ = []
    for pid in module.params["pids"]:
        try:
            with open("/proc/%d/environ" % pid, "rb") as handle:
                value = environ_value(handle.read(), name)
        except OSError:
            continue
        if value is not None:
            from_environ.append(hmac_fingerprint(key, value))
    running = {"fingerprint": None, "source": "none", "matches": [], "mixed": False}
    if from_environ:
        running.update(fingerprint=from_environ[0], source="environ", mixed=len(set(from_environ)) > 1)
    elif app_fingerprints:
        seen = sorted(set(app_fingerprints))
        matched = {}
        for label, value in values.items():
            if value is None:
                continue
            prefix = sha256_prefix(value, len(seen[0]))
            if prefix in seen:
                matched.setdefault(prefix, []).append(label)
        running.update(mixed=len(seen) > 1)
        if matched and len(matched) == len(seen):
            labels = matched[seen[0]]
            running.update(fingerprint=fingerprints[labels[0]], source="app")
        else:
            running.update(source="unknown")
    if running["fingerprint"]:
        running["matches"] = sorted(label for label, fp in fingerprints.items() if fp == running["fingerprint"])
    module.exit_json(changed=False, fingerprints=fingerprints, running=running)


if __name__ == "__main__":
    main()
