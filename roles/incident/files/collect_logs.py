#!/usr/bin/env python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Collect the last minutes of AKIG logs on this host into one redacted tar.gz.

Run by the incident role's ``archive_logs`` entry point (``ansible.builtin.script``); the archive
is then fetched into the incident folder on the controller and removed from the host.

    collect_logs.py --out FILE.tar.gz --since-min 60 [--file PATH ...] [--unit NAME ...]

* ``--file``: a log file (pm2 writes ``<app>-out.log`` / ``<app>-error.log`` under PM2_HOME/logs).
  Lines starting with an ISO time (pm2 ``time: true``: ``2026-11-27T19:17:31: ...``) are kept when
  they are at most ``--since-min`` minutes old; a line without a time belongs to the line above.
  A file without any timed line contributes its last ``--max-lines`` lines (said in MANIFEST.txt).
* ``--unit``: a systemd unit read with ``journalctl -u UNIT --since -Nmin -o short-iso``.
* Every line is redacted before it is written: values of password/secret/token/api key/
  authorization fields, bearer tokens, JWTs and passwords inside URLs are replaced by ``<redacted>``.
  Logs are evidence that leaves the host; secrets must not travel with them.

Prints one JSON object: the archive path, the sources, the line counts and how many values were redacted.
Exit status 0 even when a source is missing (it is listed as missing); 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from datetime import datetime

TIMED = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})")
REDACTIONS = [
    # key=value / key: value / "key":"value" for secret-looking keys
    (re.compile(r'(?i)("?(?:[a-z_]*password|passwd|secret|[a-z_]*token|api[_-]?key|authorization|auth_token)"?\s*[=:]\s*"?)'
                r'(?:bearer\s+)?[^\s",;&]+'), r"\1<redacted>"),
    # Authorization: Bearer xxx anywhere
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1<redacted>"),
    # JSON Web Tokens
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"), "<jwt redacted>"),
    # scheme://user:password@host
    (re.compile(r"([a-z][a-z0-9+.-]*://[^:/\s@]+:)[^@\s]+@"), r"\1<redacted>@"),
]


def redact(line: str) -> tuple[str, int]:
    count = 0
    for pattern, replacement in REDACTIONS:
        line, found = pattern.subn(replacement, line)
        count += found
    return line, count


def line_time(line: str) -> float | None:
    match = TIMED.match(line)
    if not match:
        return None
    try:
        stamp = datetime.strptime("%s %s" % match.groups(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    # pm2 and journalctl -o short-iso write the host's local time
    return time.mktime(stamp.timetuple())


def recent_lines(path: str, since: float, max_lines: int) -> tuple[list[str], str]:
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    timed = False
    keep: list[str] = []
    current_recent = False
    for line in lines:
        stamp = line_time(line)
        if stamp is not None:
            timed = True
            current_recent = stamp >= since
        if current_recent:
            keep.append(line)
    if not timed:
        return lines[-max_lines:], "no timestamps: last %d lines" % max_lines
    return keep[-max_lines:], "lines newer than the cut-off"


def journal_lines(unit: str, minutes: int, max_lines: int) -> tuple[list[str] | None, str]:
    try:
        done = subprocess.run(["journalctl", "-u", unit, "--since", "-%dmin" % minutes, "--no-pager", "-o", "short-iso",
                               "-n", str(max_lines)], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, "journalctl failed: %s" % exc
    if done.returncode != 0:
        return None, "journalctl failed: %s" % (done.stderr.strip() or done.returncode)
    return done.stdout.splitlines(), "journald"


def add_text(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    archive.addfile(info, io.BytesIO(data))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--since-min", type=int, default=60)
    parser.add_argument("--max-lines", type=int, default=20000)
    parser.add_argument("--file", action="append", default=[])
    parser.add_argument("--unit", action="append", default=[])
    args = parser.parse_args(argv)
    if args.since_min <= 0 or args.max_lines <= 0:
        parser.error("--since-min and --max-lines must be greater than 0")

    since = time.time() - args.since_min * 60
    summary = {"archive": args.out, "since_min": args.since_min, "sources": [], "redacted": 0, "lines": 0}
    manifest = ["AKIG log archive: the last %d minutes, redacted (passwords, tokens, API keys, JWTs, URL passwords)."
                % args.since_min, ""]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    old_umask = os.umask(0o077)
    try:
        with tarfile.open(args.out, "w:gz") as archive:
            sources = [("file", path) for path in args.file] + [("unit", unit) for unit in args.unit]
            for kind, source in sources:
                if kind == "file":
                    if not os.path.isfile(source):
                        summary["sources"].append({"source": source, "missing": True})
                        manifest.append("%s: missing" % source)
                        continue
                    lines, how = recent_lines(source, since, args.max_lines)
                    member = "files/" + os.path.basename(source)
                else:
                    lines, how = journal_lines(source, args.since_min, args.max_lines)
                    if lines is None:
                        summary["sources"].append({"source": "journald:" + source, "missing": True, "why": how})
                        manifest.append("journald %s: %s" % (source, how))
                        continue
                    member = "journald/%s.log" % source
                redacted = 0
                clean = []
                for line in lines:
                    text, found = redact(line)
                    redacted += found
                    clean.append(text)
                add_text(archive, member, "\n".join(clean) + ("\n" if clean else ""))
                summary["sources"].append({"source": source, "member": member, "lines": len(clean), "redacted": redacted,
                                           "how": how})
                summary["redacted"] += redacted
                summary["lines"] += len(clean)
                manifest.append("%s -> %s: %d lines (%s), %d values redacted" % (source, member, len(clean), how, redacted))
            add_text(archive, "MANIFEST.txt", "\n".join(manifest) + "\n")
    finally:
        os.umask(old_umask)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
