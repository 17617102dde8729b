# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""RB-P1-002 (authentication broken): secrets compared by keyed fingerprint, auth failures counted.

Pure logic, tested without Ansible (tests/unit/plugins/module_utils/test_auth_recovery.py); used by the
modules ``secret_fingerprint``, ``env_secret_restore``, ``auth_log_stats`` and the filter
``auth_secret_drift``.

* A secret is never returned: only ``hmac_fingerprint`` (HMAC-SHA256 with a key the controller generates
  for one run, so a fingerprint is worthless outside that run and cannot be looked up or brute-forced
  offline without the key).
* Env files are read as the AKIG backend reads them (``export``, quotes, ``#`` comments; the last line
  of a key wins), with the parser of ``database_url``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from ansible_collections.akig.runbooks.plugins.module_utils.database_url import (
    DatabaseUrlError,
    parse_env_value,
)

__all__ = [
    "AUTH_FAILURE_CLASSES",
    "EnvFileError",
    "count_auth_failures",
    "drift_findings",
    "env_value",
    "environ_value",
    "hmac_fingerprint",
    "replace_env_value",
    "sha256_prefix",
]

FINGERPRINT_HEX = 16
AUTH_FAILURE_CLASSES = (
    "invalid_signature", "expired", "malformed", "unknown_user", "bad_password", "session_missing", "session_corrupt",
)
_LINE_RE = re.compile(r"^(?P<lead>\s*(?:export\s+)?)(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?P<eq>\s*=\s*)(?P<rest>.*)$")
_SAFE_UNQUOTED = re.compile(r"^[A-Za-z0-9_./:@%+=,-]*$")


class EnvFileError(ValueError):
    """An env file that cannot be read with certainty; the message names the line, never a value."""


def hmac_fingerprint(key: str, value: str) -> str:
    """Keyed fingerprint of ``value``: the first 16 hex digits of HMAC-SHA256(key, value)."""
    if not key:
        raise ValueError("the fingerprint key is empty")
    return hmac.new(key.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()[:FINGERPRINT_HEX]


def sha256_prefix(value: str, length: int = 12) -> str:
    """The unkeyed fingerprint the AKIG backend reports about itself (``jwt_fingerprint`` of /api/health)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:length]


def env_value(text: str, name: str) -> Optional[str]:
    """Value of ``name`` in the env file ``text`` as the app reads it (the last line wins); None when absent."""
    found: Optional[str] = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE_RE.match(line)
        if not match or match.group("key") != name:
            continue
        try:
            found = parse_env_value(match.group("rest"))[0]
        except DatabaseUrlError as exc:
            raise EnvFileError("line %d (%s): %s" % (number, name, exc)) from None
    return found


def _quoted(value: str) -> str:
    if _SAFE_UNQUOTED.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return '"%s"' % escaped


def replace_env_value(text: str, name: str, value: str) -> str:
    """``text`` with every ``name`` line set to ``value``; every other line kept byte for byte.

    A file without a ``name`` line gets one appended. The value is written unquoted when that is
    unambiguous, else double-quoted with the app's escapes, and reads back as ``value``.
    """
    lines = text.splitlines(keepends=True)
    out: List[str] = []
    replaced = False
    for line in lines:
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        match = _LINE_RE.match(body) if body.strip() and not body.strip().startswith("#") else None
        if match and match.group("key") == name:
            out.append(match.group("lead") + name + "=" + _quoted(value) + ending)
            replaced = True
        else:
            out.append(line)
    if not replaced:
        if out and not out[-1].endswith(("\n", "\r")):
            out.append("\n")
        out.append("%s=%s\n" % (name, _quoted(value)))
    result = "".join(out)
    if env_value(result, name) != value:  # never write what the app would read differently
        raise EnvFileError("%s cannot be written back so that it reads the same" % name)
    return result


def environ_value(raw: bytes, name: str) -> Optional[str]:
    """Value of ``name`` in a ``/proc/PID/environ`` blob (NUL-separated ``KEY=value``); None when absent."""
    prefix = name.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode("utf-8", "replace")
    return None


# --------------------------------------------------------------------------- drift


def _effective(host: Mapping[str, Any]) -> Optional[str]:
    """What the host signs tokens with now: the running fingerprint, else the file's (process not readable)."""
    running = host.get("running")
    if running:
        return str(running)
    if host.get("running_source") == "unknown":
        return "unknown"
    return host.get("file")


def drift_findings(hosts: Mapping[str, Mapping[str, Any]], staging: Optional[str] = None,
                   staging_reason: str = "") -> Dict[str, Any]:
    """Compare each backend's secret (running, env file, last good backup), the backends with each other, and staging.

    ``hosts``: host name -> ``{running, running_source, file, backup, backup_path}`` (fingerprints of one run).
    Returns ``findings`` (``{kind, hosts, evidence}``), ``restore`` (the hosts whose env file or running
    secret differs from their backup), ``restart`` (hosts whose process does not run the file's secret),
    ``problems`` (why a restore would be wrong: nothing to restore, backups that disagree), ``staging``
    and ``summary``. Fingerprints are compared, never values.
    """
    names = sorted(hosts)
    effective = {h: _effective(hosts[h]) for h in names}
    backup = {h: hosts[h].get("backup") for h in names}
    findings: List[Dict[str, Any]] = []
    problems: List[str] = []

    restore = [h for h in names if backup[h] and (hosts[h].get("file") != backup[h] or effective[h] != backup[h])]
    restart = [h for h in names if effective[h] != hosts[h].get("file")]
    for h in names:
        if not backup[h]:
            problems.append("%s: no readable backup of the env file to compare with (or restore from)" % h)

    counts = Counter(v for v in effective.values() if v and v != "unknown")
    majority, majority_n = (counts.most_common(1)[0] if counts else (None, 0))
    # one backend alone: the others agree with each other (and, with two backends, with their backups)
    if len(names) >= 2 and majority_n == len(names) - 1 and majority_n >= 2:
        alone = [h for h in names if effective[h] != majority]
    elif len(names) >= 2 and len(restore) == 1 and len(counts) > 1:
        alone = restore
    else:
        alone = []
    if alone:
        h = alone[0]
        peers = sorted({effective[o] for o in names if o != h})
        findings.append({
            "kind": "secret_drift_one_backend", "hosts": [h],
            "evidence": "%s alone signs tokens with a JWT secret of fingerprint %s; the other backend(s) use %s and its "
                        "last good backup holds %s (a token issued by one backend is rejected by the other)"
                        % (h, effective[h], ", ".join(str(p) for p in peers), backup[h])})
    elif len(counts) > 1:
        findings.append({"kind": "secrets_disagree", "hosts": names,
                         "evidence": "backends sign with different secrets: %s" % ", ".join(
                             "%s=%s" % (h, effective[h]) for h in names)})

    drifted_all = bool(names) and all(backup[h] and effective[h] != backup[h] for h in names)
    if drifted_all and len(counts) == 1:
        findings.append({"kind": "secret_drift_all_backends", "hosts": names,
                         "evidence": "every backend signs with %s, the last good backups hold %s"
                                     % (majority, ", ".join(sorted({str(backup[h]) for h in names})))})
    else:
        for h in restore:
            if any(f["hosts"] == [h] for f in findings):
                continue
            findings.append({"kind": "secret_drift", "hosts": [h],
                             "evidence": "%s: running %s (%s), env file %s, last good backup %s" % (
                                 h, effective[h], hosts[h].get("running_source", "?"), hosts[h].get("file"), backup[h])})
    for h in restart:
        findings.append({"kind": "secret_not_loaded", "hosts": [h],
                         "evidence": "%s: the process runs %s but the env file holds %s (changed since it started)"
                                     % (h, effective[h], hosts[h].get("file"))})

    # after restoring every backend from its backup, would they agree? If not, the backups cannot repair it
    backups_now = {backup[h] for h in names if backup[h]}
    if len(counts) > 1 and len(backups_now) > 1:
        same = [h for h in names if backup[h] and backup[h] == effective[h] and h in (alone or names)]
        if alone and alone[0] in same:
            problems.append("%s: its backup %s holds the same secret as the drifted one (fingerprint %s): nothing to "
                            "restore from it" % (alone[0], hosts[alone[0]].get("backup_path", "backup"), backup[alone[0]]))
        else:
            problems.append("the backends sign with different secrets (%s) and their last good backups disagree too (%s): "
                            "a backup holds a drifted secret; which one is right is a decision for a person"
                            % (", ".join("%s=%s" % (h, effective[h]) for h in names),
                               ", ".join("%s=%s" % (h, backup[h]) for h in names)))
    backups = {backup[h] for h in names if backup[h]}
    if restore and len(backups) > 1 and not problems:
        problems.append("the backends' last good backups hold different secrets (%s): which one is right is a "
                        "decision for a person, not for the runbook" % ", ".join(
                            "%s=%s" % (h, backup[h]) for h in names))

    if staging:
        good = sorted(backups)
        staging_state = "equal" if good == [staging] else "differs"
        staging_text = "staging %s the production backup (%s vs %s)" % (
            "equals" if staging_state == "equal" else "differs from", staging, ", ".join(good) or "none")
    else:
        staging_state = "skipped"
        staging_text = "staging not compared: %s" % (staging_reason or "no fingerprint source")

    if findings:
        summary = "; ".join(f["evidence"] for f in findings)
    else:
        summary = "no JWT secret drift: every backend runs the secret of its env file and of its last good backup"
    return {"findings": findings, "restore": restore, "restart": restart, "problems": problems,
            "staging": staging_state, "staging_text": staging_text, "summary": summary,
            "drifted": bool(restore)}


# --------------------------------------------------------------------------- auth log


def _json_part(line: str) -> Optional[Dict[str, Any]]:
    start = line.find("{")
    if start < 0:
        return None
    try:
        data = json.loads(line[start:])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def count_auth_failures(lines: Iterable[str], since: Optional[str] = None) -> Dict[str, Any]:
    """Count the app's ``auth failure`` lines by class, and the API requests, in JSON log lines.

    ``since``: ISO time (UTC, ``2026-11-30T16:00:00Z``); lines whose ``ts`` is earlier are skipped.
    ``error_rate`` is failures / API requests (health checks excluded), 0 without requests.
    """
    classes: Counter = Counter()
    requests = 0
    unauthorized = 0
    cutoff = (since or "").replace("+00:00", "").rstrip("Z")
    for line in lines:
        data = _json_part(line)
        if not data:
            continue
        ts = str(data.get("ts", ""))
        if cutoff and ts and ts < cutoff:
            continue
        msg = data.get("msg")
        if msg == "auth failure":
            cls = str(data.get("class", "unknown"))
            classes[cls if cls in AUTH_FAILURE_CLASSES else "other"] += 1
        elif msg == "request":
            path = str(data.get("path", ""))
            if path.startswith("/api/") and not path.startswith("/api/health"):
                requests += 1
                if data.get("status") == 401:
                    unauthorized += 1
    total = sum(classes.values())
    return {
        "classes": {cls: classes.get(cls, 0) for cls in AUTH_FAILURE_CLASSES + (("other",) if classes.get("other") else ())},
        "failures": total,
        "requests": requests,
        "unauthorized": unauthorized,
        "error_rate": round(total / requests, 4) if requests else 0.0,
    }


def merge_counts(parts: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Sum several ``count_auth_failures`` results (one per host or file)."""
    classes: Counter = Counter()
    requests = unauthorized = 0
    for part in parts:
        classes.update(part.get("classes", {}))
        requests += int(part.get("requests", 0))
        unauthorized += int(part.get("unauthorized", 0))
    total = sum(classes.values())
    known = {cls: classes.get(cls, 0) for cls in AUTH_FAILURE_CLASSES}
    known.update({cls: n for cls, n in classes.items() if cls not in known})
    return {"classes": known, "failures": total, "requests": requests, "unauthorized": unauthorized,
            "error_rate": round(total / requests, 4) if requests else 0.0}
