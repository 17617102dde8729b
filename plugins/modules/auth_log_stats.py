#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: auth_log_stats
short_description: Count the AKIG backend's authentication failures by class in its logs or in an incident log archive
version_added: 0.2.0
author: AKIG Engineering Team (@akig)
description:
  - Reads JSON log lines of the AKIG backend (pm2 log files on an app host, or the C(.tar.gz) archives the
    incident role's C(archive_logs) puts in the incident folder) and counts the C(auth failure) lines by class
    (C(invalid_signature), C(expired), C(malformed), C(unknown_user), C(bad_password), C(session_missing),
    C(session_corrupt)) and the API requests (health checks excluded), which give the auth error rate.
  - Returns counts only, never a log line.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Read-only.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  files:
    description: Plain log files to read (a missing one is listed in RV(missing)).
    type: list
    elements: path
    default: []
  archives:
    description: C(.tar.gz) archives to read every member of (a missing one is listed in RV(missing)).
    type: list
    elements: path
    default: []
  since:
    description: ISO time (UTC); lines logged earlier are skipped.
    type: str
"""

EXAMPLES = r"""
- name: Count the auth failures of the last hour in the incident's log archives
  akig.runbooks.auth_log_stats:
    archives: "{{ groups['backend'] | map('regex_replace', '^(.*)$', incident_dir ~ '/logs/\\1.tar.gz') | list }}"
  delegate_to: localhost
  register: auth_log
"""

RETURN = r"""
classes:
  description: Failures per class.
  returned: always
  type: dict
  sample: {invalid_signature: 42, expired: 0, malformed: 1, unknown_user: 0, bad_password: 3, session_missing: 0, session_corrupt: 0}
failures:
  description: All failures.
  returned: always
  type: int
requests:
  description: API requests (health checks excluded).
  returned: always
  type: int
unauthorized:
  description: Requests answered 401.
  returned: always
  type: int
error_rate:
  description: failures / requests (0 without requests).
  returned: always
  type: float
missing:
  description: Files or archives that were not there.
  returned: always
  type: list
  elements: str
"""

import os
import tarfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.akig.runbooks.plugins.module_utils.auth_recovery import count_auth_failures, merge_counts


def file_lines(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield from handle


def archive_lines(path):
    with tarfile.open(path, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            for raw in handle:
                yield raw.decode("utf-8", "replace")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="path", default=[]),
            archives=dict(type="list", elements="path", default=[]),
            since=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    parts, missing = [], []
    sources = [(path, file_lines) for path in module.params["files"]]
    sources += [(path, archive_lines) for path in module.params["archives"]]
    for path, reader in sources:
        if not os.path.isfile(path):
            missing.append(path)
            continue
        try:
            parts.append(count_auth_failures(reader(path), module.params["since"]))
        except (OSError, tarfile.TarError) as exc:
            module.fail_json(msg="Cannot read %s (%s)." % (path, exc.__class__.__name__))
    result = merge_counts(parts)
    module.exit_json(changed=False, missing=missing, **result)


if __name__ == "__main__":
    main()
