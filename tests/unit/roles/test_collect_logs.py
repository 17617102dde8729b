# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""roles/incident/files/collect_logs.py, the log collector of the incident role's archive_logs entry point.

Runs the script as the role does (a subprocess with real files) and reads the tar.gz it writes:
the cut-off by time, the continuation lines, files without timestamps, missing sources, and that
no secret survives the redaction.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, List

import pytest

# every test runs the script as the role does: a subprocess (tests/unit/conftest.py: the "process" lane)
pytestmark = pytest.mark.process

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "incident" / "files" / "collect_logs.py"
SECRETS = [
    "CANARY-db-password-7f3a",
    "CANARY-jwt-secret-19bd",
    "SG.CANARY-sendgrid-key",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwcm9iZSJ9.c2lnbmF0dXJlLWNhbmFyeQ",
    "CANARY-bearer-0c4d",
]


def stamp(minutes_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - minutes_ago * 60))


def collect(tmp_path: Path, *args: str) -> Dict[str, object]:
    out = tmp_path / "out" / "logs.tar.gz"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    with tarfile.open(out) as archive:
        summary["members"] = {m.name: archive.extractfile(m).read().decode() for m in archive.getmembers()}  # type: ignore[union-attr]
    return summary


def test_keeps_the_last_hour_with_continuation_lines(tmp_path: Path) -> None:
    log = tmp_path / "akig-backend-out.log"
    recent, newest = f"{stamp(30)}: recent line", f"{stamp(1)}: newest line"
    log.write_text("\n".join([f"{stamp(90)}: old line", "  old continuation", recent, "  recent continuation", newest]) + "\n")
    summary = collect(tmp_path, "--since-min", "60", "--file", str(log))
    text = summary["members"]["files/akig-backend-out.log"]  # type: ignore[index]
    assert "old" not in text
    assert text.splitlines() == [recent, "  recent continuation", newest]
    assert summary["lines"] == 3
    assert "MANIFEST.txt" in summary["members"]  # type: ignore[operator]


def test_untimed_file_keeps_its_tail_and_missing_sources_are_listed(tmp_path: Path) -> None:
    log = tmp_path / "plain.log"
    log.write_text("\n".join(f"line {n}" for n in range(50)) + "\n")
    summary = collect(tmp_path, "--max-lines", "5", "--file", str(log), "--file", str(tmp_path / "absent.log"))
    assert summary["members"]["files/plain.log"].splitlines() == [f"line {n}" for n in range(45, 50)]  # type: ignore[index]
    sources: List[Dict[str, object]] = summary["sources"]  # type: ignore[assignment]
    assert {"source": str(tmp_path / "absent.log"), "missing": True} in sources
    assert "absent.log: missing" in summary["members"]["MANIFEST.txt"]  # type: ignore[index]


def test_no_secret_survives_the_redaction(tmp_path: Path) -> None:
    now = stamp(0)
    log = tmp_path / "akig-backend-error.log"
    log.write_text("\n".join([
        f"{now}: connect failed DATABASE_URL=postgres://akig_app:{SECRETS[0]}@127.0.0.11:5432/akig_db",
        f'{now}: {{"msg":"boot","JWT_SECRET":"{SECRETS[1]}","level":"info"}}',
        f"{now}: sendgrid api_key={SECRETS[2]} rejected",
        f"{now}: token {SECRETS[3]} expired",
        f"{now}: Authorization: Bearer {SECRETS[4]}",
        f"{now}: password: {SECRETS[0]}",
    ]) + "\n")
    summary = collect(tmp_path, "--file", str(log))
    text = summary["members"]["files/akig-backend-error.log"]  # type: ignore[index]
    for secret in SECRETS:
        assert secret not in text
    assert "postgres://akig_app:[REDACTED]@127.0.0.11:5432/akig_db" in text
    assert summary["redacted"] >= len(SECRETS)
    assert len(text.splitlines()) == 6  # lines are kept, only values are replaced


# Each form a secret takes in AKIG's logs: (log line with {secret}, the secret). Every secret is a canary that
# must not reach the archive.
PLANTED = [
    ("redis connect redis://:{secret}@127.0.0.31:6379/0 failed", "CANARY-redis-url-pw"),
    ("Authorization: Basic {secret}", "Q0FOQVJZLXVzZXI6Q0FOQVJZLWJhc2lj"),
    ("headers {{'authorization': 'Basic {secret}', host: 'app-1'}}", "Q0FOQVJZLWluc3BlY3Q6YmFzaWM="),
    ("DATABASE_URL=postgres://akig_app:{secret}@127.0.0.11:5432/akig_db", "CANARY p@ss w0rd"),
    ("retry redis://:{secret}@cache-1:6379 in 5 s", "CANARY@redis zq9"),
    ('1764253385.1 [0 127.0.0.21:51234] "AUTH" "{secret}"', "CANARY-monitor-auth"),
    ('1764253385.2 [0 127.0.0.21:51234] "auth" "default" "{secret}"', "CANARY-monitor-acl"),
    ("AUTH {secret}", "CANARY-redis-auth"),
    ("requirepass {secret}", "CANARY-requirepass"),
    ('"config" "set" "requirepass" "{secret}"', "CANARY-config-set"),
    ("redis-cli -h 127.0.0.31 -a {secret} ping", "CANARY-redis-cli"),
    ("Cookie: connect.sid={secret}; theme=dark", "s%3ACANARY-cookie.sig"),
    ("Set-Cookie: akig_session={secret}; Path=/; HttpOnly", "CANARY-set-cookie"),
    ("incoming {{ cookie: 'sid={secret}', host: 'app-1' }}", "CANARY-inspect-cookie"),
    ("notify via https://hooks.slack.com/services/{secret} failed: 404", "T0CANARY/B0CANARY/CANARYwebhook0secret"),
    ("POST http://127.0.0.41/slack/services/{secret} 200", "T0LAB/B0LAB/CANARYlabhook"),
    ("sendgrid rejected key {secret}", "SG.CANARYaaaaaaaaaaaaaaaa.CANARYbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
    ("export AWS_SECRET_ACCESS_KEY={secret}", "CANARYwJalrXUtnFEMIK7MDENGbPxRfiCY"),
    ("mysql host=db pwd={secret}", "CANARY-pwd"),
    ('{{"msg":"login","password":"{secret}","user":"bob"}}', "CANARY sp4ced pw0rd"),
    ("node server.js --password {secret} --port 4000", "CANARY-flag"),
]
# known values, given only as fingerprints, that no shape rule would find
KNOWN = ["CANARY-known-7c1e", "CANARY kn0wn w1th sp4ces", "CANARY-\u00e9t\u00e9-known"]


def fingerprints(path: Path, values: List[str]) -> Path:
    path.write_text("# sha256 length\n" + "".join(
        "%s %d\n" % (hashlib.sha256(value.encode()).hexdigest(), len(value)) for value in values))
    return path


def test_every_secret_form_is_redacted(tmp_path: Path) -> None:
    now = stamp(0)
    log = tmp_path / "akig-backend-out.log"
    known_lines = [
        f"{now}: value is {KNOWN[0]}.",
        f"{now}: ({KNOWN[1]}) and again:{KNOWN[1]}",
        f"{now}: {KNOWN[2]}",
    ]
    log.write_text("\n".join([f"{now}: {line.format(secret=secret)}" for line, secret in PLANTED] + known_lines) + "\n")
    prints = fingerprints(tmp_path / "fingerprints", KNOWN)
    summary = collect(tmp_path, "--file", str(log), "--secret-fingerprints", str(prints))
    members: Dict[str, str] = summary.pop("members")  # type: ignore[assignment]
    output = json.dumps(summary) + "".join(members.values())
    for secret in [secret for _line, secret in PLANTED] + KNOWN:
        assert secret not in output
        for part in secret.split():  # a value with spaces leaks no part of it either
            assert part not in output
    assert "CANARY" not in output
    text = members["files/akig-backend-out.log"]
    assert len(text.splitlines()) == len(PLANTED) + len(known_lines)  # lines are kept, only values are replaced
    assert summary["redacted"] >= len(PLANTED) + 4 and summary["fingerprints"] == 3
    # what is not secret stays: hosts, ports, schemes, the header names, the rest of the line
    for kept in ["redis://:[REDACTED]@127.0.0.31:6379/0 failed", "postgres://akig_app:[REDACTED]@127.0.0.11:5432/akig_db",
                 "Authorization: Basic [REDACTED]", "hooks.slack.com/services/[REDACTED] failed: 404",
                 "value is [REDACTED].", "([REDACTED]) and again:[REDACTED]", "--port 4000", "Cookie: [REDACTED]"]:
        assert kept in text
    assert "theme=dark" not in text  # a cookie header is masked whole
    assert "known secret values" in members["MANIFEST.txt"]


def test_text_that_only_looks_like_a_secret_is_kept(tmp_path: Path) -> None:
    now = stamp(0)
    lines = [
        f"{now}: GET http://127.0.0.1:4000/api/health 200 for admin@example.com",
        f"{now}: author=Jane basic configuration loaded",
        f"{now}: 3 AUTHORS, user=bob port=5432",
    ]
    log = tmp_path / "plain.log"
    log.write_text("\n".join(lines) + "\n")
    summary = collect(tmp_path, "--file", str(log))
    assert summary["members"]["files/plain.log"].splitlines() == lines  # type: ignore[index]
    assert summary["redacted"] == 0


def test_fingerprints_are_checked_and_short_values_ignored(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(f"{stamp(0)}: pin abc and CANARY-fp-long\n")
    prints = fingerprints(tmp_path / "fp", ["abc", "CANARY-fp-long"])
    summary = collect(tmp_path, "--file", str(log), "--secret-fingerprints", str(prints))
    assert summary["members"]["files/a.log"].endswith("pin abc and [REDACTED]\n")  # type: ignore[index]
    assert summary["fingerprints"] == 1 and summary["fingerprints_ignored"] == 1


@pytest.mark.parametrize("content", ["not-a-hash 12\n", "%s\n" % ("a" * 64), "%s x\n" % ("a" * 64), "%s 0\n" % ("a" * 64)])
def test_a_malformed_fingerprint_file_is_refused(tmp_path: Path, content: str) -> None:
    prints = tmp_path / "fp"
    prints.write_text("# comment\n\n" + content)
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.tar.gz"), "--secret-fingerprints",
                           str(prints)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "line 3 is not '<sha256 hex> <length 1-4096>'" in done.stderr
    assert content.strip() not in done.stderr
    assert not (tmp_path / "x.tar.gz").exists()


@pytest.mark.parametrize("args", [["--since-min", "0"], ["--max-lines", "-1"]])
def test_bad_arguments_are_refused(tmp_path: Path, args: List[str]) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.tar.gz"), *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "must be greater than 0" in done.stderr
    assert not (tmp_path / "x.tar.gz").exists()
