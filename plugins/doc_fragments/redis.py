# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """The Redis connection options of redis_keys and redis_keys_info (named like community.general's redis modules)."""

    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or IP address of the Redis server (a standalone server or a Sentinel primary; not Redis Cluster).
    type: str
    default: localhost
  login_port:
    description:
      - TCP port of the server.
    type: int
    default: 6379
  login_user:
    description:
      - ACL user to authenticate as (Redis 6 or later); without it the password authenticates the default user.
    type: str
  login_password:
    description:
      - Password. Never returned or logged; a failure message never contains it.
    type: str
  tls:
    description:
      - Connect with TLS.
    type: bool
    default: false
  validate_certs:
    description:
      - With O(tls), check the server's certificate.
    type: bool
    default: true
  ca_certs:
    description:
      - With O(tls), the CA bundle to check the server's certificate with (default the system's).
    type: str
  client_cert_file:
    description:
      - With O(tls), the client certificate.
    type: str
  client_key_file:
    description:
      - With O(tls), the client certificate's key.
    type: str
  timeout:
    description:
      - Seconds to wait for the connection and for each reply.
    type: float
    default: 10
  db:
    description:
      - Database index (from 0 to the server's C(databases) minus one, read with C(CONFIG GET databases)). An index
        out of range fails the task before anything is read or changed.
    type: int
    default: 0
  pattern:
    description:
      - C(SCAN MATCH) glob pattern of the keys, for example V(akig:sess:*). Empty (or V(*)) means every key of O(db).
    type: str
    default: ''
  batch_size:
    description:
      - Keys per C(SCAN) batch (the C(COUNT) hint) and per pipeline; memory is bounded by it. From 1 to 100000.
    type: int
    default: 1000
notes:
  - Uses C(SCAN), never C(KEYS). C(SCAN) returns every key present for the whole scan, possibly twice while the server
    rehashes, so counts of a database that changes during the scan are close, not exact.
  - The connection options can be set once for both modules with C(module_defaults) and C(group/akig.runbooks.redis).
  - Needs the Python library C(redis) (redis-py) on the host that runs the module.
"""
