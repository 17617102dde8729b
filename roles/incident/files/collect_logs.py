#!/usr/bin/env python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Collect the last minutes of AKIG logs on this host into one redacted tar.gz.

Run by the incident role's ``archive_logs`` entry point (``ansible.builtin.script``); the archive
is then fetched into the incident folder on the controller and removed from the host.

    collect_logs.py --out FILE.tar.gz --since-min 60 [--file PATH ...] [--unit NAME ...]
                    [--secret-fingerprints FILE]

* ``--file``: a log file (pm2 writes ``<app>-out.log`` / ``<app>-error.log`` under PM2_HOME/logs).
  Lines starting with an ISO time (pm2 ``time: true``: ``2026-11-27T19:17:31: ...``) are kept when
  they are at most ``--since-min`` minutes old; a line without a time belongs to the line above.
  A file without any timed line contributes its last ``--max-lines`` lines (said in MANIFEST.txt).
* ``--unit``: a systemd unit read with ``journalctl -u UNIT --since -Nmin -o short-iso``.
* Every line is redacted before it is written; each secret becomes ``[REDACTED]``. Logs are evidence
  that leaves the host; secrets must not travel with them. By their shape (:data:`REDACTIONS`):
  values of password/secret/token/API key/access key/``pwd`` fields (``key=value``, ``key: value``,
  JSON and quoted values, ``AWS_SECRET_ACCESS_KEY=...``), ``--password x`` flags, the credentials of
  ``Authorization:`` headers and of ``Bearer``/``Basic`` schemes, ``Cookie:``/``Set-Cookie:`` values,
  JWTs, passwords inside URLs (``redis://:pass@host``, also with ``@`` or spaces in the password),
  Slack webhook paths (``hooks.slack.com/services/...``), SendGrid keys (``SG.xxx``), and Redis
  ``AUTH``, ``requirepass``/``masterauth`` and ``redis-cli -a`` arguments.
* ``--secret-fingerprints FILE`` (optional, repeatable): also redact the known secret values
  themselves, wherever they stand, without the secrets ever being on the command line or on the
  host. Each line of FILE is ``<sha256 hex of the value> <length of the value in characters>``
  (blank lines and ``# comments`` are ignored). Every substring of a log line that has one of those
  lengths and stands on its own (at the start or end of the line, or next to a character that is
  not a letter or digit, or beginning/ending with such a character) is hashed, and replaced when
  its SHA-256 is in the file. Values shorter than 4 characters are ignored (counted in the output
  as ``fingerprints_ignored``): they would mask ordinary words. A malformed FILE exits with status 2.
  With Ansible, write the file with the ``hash`` and ``length`` filters, which hash the UTF-8 text
  and count characters as this script does, then pass its path and remove it afterwards::

      - name: Put the fingerprints (never the values) of the known secrets on the host
        ansible.builtin.copy:
          content: "{% for s in secrets %}{{ s | hash('sha256') }} {{ s | length }}\n{% endfor %}"
          dest: "{{ fingerprints_path }}"
          mode: "0600"
        no_log: true
      # then: collect_logs.py ... --secret-fingerprints {{ fingerprints_path | quote }}
      # and in an always: ansible.builtin.file: {path: "{{ fingerprints_path }}", state: absent}

  The file holds no secret, but a SHA-256 of a short or guessable value can be brute-forced:
  keep it mode 0600 and delete it after the run.

Prints one JSON object: the archive path, the sources, the line counts and how many values were redacted.
Exit status 0 even when a source is missing (it is listed as missing); 2 on bad arguments.

This file runs alone on the hosts (``ansible.builtin.script`` copies only it), so it cannot import the
collection's module_utils: it keeps its own redaction, with the collection's marker
(``MASK`` of plugins/module_utils/redact.py) and its own time parsing (local time, see :func:`line_time`).
"""

from __future__ import annotations

import argparse
import hashlib
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
MASK = "[REDACTED]"  # the collection's one marker for masked secrets (plugins/module_utils/redact.py)
MIN_FINGERPRINT_LENGTH = 4
MAX_FINGERPRINT_LENGTH = 4096

_QUOTED = r"""(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
# a value: quoted (spaces allowed inside) or bare; never one that is already redacted
_VALUE = r"(?!\[REDACTED\])(?:%s|[^\s\"',;&]+)" % _QUOTED
# field names that hold secrets: any name containing one of these words (PGPASSWORD, JWT_SECRET,
# AWS_SECRET_ACCESS_KEY, x-api-key, client_secret, pwd ...), and auth / *_auth / auth_* (not author)
_SECRET_KEY = (
    r"(?:[A-Za-z0-9_.-]*(?:passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|credentials?|session[_-]?id|signature|authorization)[A-Za-z0-9_.-]*"
    r"|[A-Za-z0-9_.-]*[_.-]auth|auth(?:[_.-][A-Za-z0-9_.-]+)?)"
)
_SCHEME = r"(?:(?:basic|bearer|digest|token|negotiate|ntlm|apikey)\s+)?"
_HOST_AFTER = r"""(?=(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d+)?(?:[/?#\s"'<>,;)\]}]|$))"""


def _keep_quotes(match: "re.Match[str]") -> str:
    """The match with its ``value`` group masked: what precedes the value is kept, and so are its quotes."""
    value = match.group("value")
    masked = value[0] + MASK + value[-1] if value[:1] in ("'", '"') and len(value) > 1 else MASK
    return match.group(0)[:match.start("value") - match.start(0)] + masked


# (pattern, replacement); the order matters: a value an earlier rule masked is not masked again.
REDACTIONS = [
    # Cookie: / Set-Cookie: headers and cookie fields: the whole value (to the end of the line unless quoted)
    (re.compile(r"""(?i)((?:^|(?<=[\s"'{,(]))["']?(?:set-)?cookie["']?\s*[:=]\s*)(?P<value>(?!\[REDACTED\])(?:%s|[^\s].*))"""
                % _QUOTED), _keep_quotes),
    # key=value / key: value / "key":"value" / 'key': 'value' for secret-looking keys (an auth scheme is kept)
    (re.compile(r"""(?i)((?<![A-Za-z0-9_.-])(["']?)%s\2\s*[=:]\s*)(%s)(?P<value>%s)""" % (_SECRET_KEY, _SCHEME, _VALUE)),
     _keep_quotes),
    # --password x, --api-key x, redis-cli -a x / --pass x
    (re.compile(r"""(?i)((?<!\S)--?[A-Za-z0-9-]*(?:password|passwd|secret|token|api-?key)\s+)(?P<value>%s)""" % _VALUE),
     _keep_quotes),
    (re.compile(r"""(\bredis-cli\b[^\n]*?\s(?:-a|--pass)\s+)(?P<value>%s)""" % _VALUE), _keep_quotes),
    # Authorization: Bearer xxx / Basic xxx anywhere else
    (re.compile(r"(?i)(\bbearer\s+)(?!\[REDACTED\])[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MASK),
    (re.compile(r"(\bBasic\s+)(?=[A-Za-z0-9+/]*[0-9A-Z+/=])[A-Za-z0-9+/]{6,}={0,2}"), r"\1" + MASK),
    # JSON Web Tokens
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"), MASK),
    # scheme://user:password@host, also redis://:password@host and passwords with '@' or spaces: the
    # password runs to the last '@' followed by a host (and port) before a '/', another URL or the end of
    # the line (when in doubt more is masked, never less)
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)(?!\[REDACTED\]@)(?:(?!://)[^\n/]){1,256}@" + _HOST_AFTER),
     r"\1" + MASK + "@"),
    # Slack incoming webhooks: the path after /services/ is the secret
    (re.compile(r"(?i)((?:hooks\.slack\.com|/slack)/services/)(?!\[REDACTED\])[^\s\"'<>]+"), r"\1" + MASK),
    (re.compile(r"(/services/)T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+"), r"\1" + MASK),
    # SendGrid API keys
    (re.compile(r"\bSG\.[A-Za-z0-9_-]{6,}(?:\.[A-Za-z0-9_-]{6,})?"), MASK),
    # Redis: AUTH [user] password (as sent, or as MONITOR quotes it), requirepass / masterauth values
    (re.compile(r"""(\bAUTH\s+|(?i:"auth")\s+)(?!\[REDACTED\])(?:%s|\S+)(?:\s+(?:%s|(?!\[REDACTED\])\S+))?""" % (_QUOTED, _QUOTED)),
     r"\1" + MASK),
    (re.compile(r"""(?i)(\b(?:requirepass|masterauth)"?\s+)(?P<value>%s)""" % _VALUE), _keep_quotes),
]


def redact(line: str) -> tuple[str, int]:
    count = 0
    for pattern, replacement in REDACTIONS:
        line, found = pattern.subn(replacement, line)
        count += found
    return line, count


class KnownSecrets:
    """Redacts the values whose SHA-256 fingerprints were given (``--secret-fingerprints``)."""

    def __init__(self, digests: dict[int, set[bytes]]) -> None:
        self.digests = digests
        self.lengths = sorted(digests)

    def __bool__(self) -> bool:
        return bool(self.digests)

    @classmethod
    def load(cls, paths: list[str]) -> tuple["KnownSecrets", int]:
        """The fingerprints of ``paths`` and how many were ignored as too short; ValueError says what is wrong."""
        digests: dict[int, set[bytes]] = {}
        ignored = 0
        for path in paths:
            try:
                with open(path, "r", encoding="ascii") as handle:
                    lines = handle.read().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError("cannot read --secret-fingerprints %s: %s" % (path, exc.__class__.__name__)) from None
            for number, raw in enumerate(lines, 1):
                text = raw.split("#", 1)[0].strip()
                if not text:
                    continue
                fields = text.split()
                if (len(fields) != 2 or not re.fullmatch(r"[0-9A-Fa-f]{64}", fields[0]) or not fields[1].isdigit()
                        or not 0 < int(fields[1]) <= MAX_FINGERPRINT_LENGTH):
                    raise ValueError(
                        "--secret-fingerprints %s line %d is not '<sha256 hex> <length 1-%d>'"
                        % (path, number, MAX_FINGERPRINT_LENGTH))
                length = int(fields[1])
                if length < MIN_FINGERPRINT_LENGTH:
                    ignored += 1
                    continue
                digests.setdefault(length, set()).add(bytes.fromhex(fields[0]))
        return cls(digests), ignored

    def redact(self, line: str) -> tuple[str, int]:
        """``line`` with every standalone substring whose fingerprint is known replaced by MASK."""
        size = len(line)
        if not self.digests or size < self.lengths[0]:
            return line, 0
        alnum = [char.isalnum() for char in line]
        starts = [i for i in range(size) if i == 0 or not alnum[i - 1] or not alnum[i]]
        ends = [j == size or not alnum[j] or not alnum[j - 1] for j in range(size + 1)]
        spans = []
        for length in self.lengths:
            wanted = self.digests[length]
            for start in starts:
                end = start + length
                if end > size:
                    break
                if ends[end] and hashlib.sha256(line[start:end].encode("utf-8", "surrogatepass")).digest() in wanted:
                    spans.append((start, end))
        if not spans:
            return line, 0
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if merged and start < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        out, last = [], 0
        for start, end in merged:
            out.append(line[last:start])
            out.append(MASK)
            last = end
        out.append(line[last:])
        return "".join(out), len(merged)


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
    parser.add_argument("--secret-fingerprints", action="append", default=[], metavar="FILE",
                        help="lines '<sha256 hex> <length>' of secret values to redact wherever they stand")
    args = parser.parse_args(argv)
    if args.since_min <= 0 or args.max_lines <= 0:
        parser.error("--since-min and --max-lines must be greater than 0")
    try:
        known, ignored = KnownSecrets.load(args.secret_fingerprints)
    except ValueError as exc:
        parser.error(str(exc))

    since = time.time() - args.since_min * 60
    summary = {"archive": args.out, "since_min": args.since_min, "sources": [], "redacted": 0, "lines": 0,
               "fingerprints": sum(len(digests) for digests in known.digests.values()), "fingerprints_ignored": ignored}
    manifest = ["AKIG log archive: the last %d minutes, redacted (passwords, tokens, API keys, cookies, JWTs, URL "
                "passwords, webhook paths%s)." % (args.since_min, ", %d known secret values" % summary["fingerprints"]
                                                  if known else ""), ""]
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
                    # the known values first: a shape rule could mask only a part of one
                    text, found = known.redact(line)
                    text, more = redact(text)
                    redacted += found + more
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
