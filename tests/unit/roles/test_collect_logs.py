# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""roles/incident/files/collect_logs.py, the log collector of the incident role's archive_logs entry point.

Runs the script as the role does (a subprocess with real files) and reads the tar.gz it writes:
the cut-off by time, the continuation lines, files without timestamps, missing sources, and that
no secret survives the redaction.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, List

import pytest

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
    assert "postgres://akig_app:<redacted>@127.0.0.11:5432/akig_db" in text
    assert summary["redacted"] >= len(SECRETS)
    assert len(text.splitlines()) == 6  # lines are kept, only values are replaced


@pytest.mark.parametrize("args", [["--since-min", "0"], ["--max-lines", "-1"]])
def test_bad_arguments_are_refused(tmp_path: Path, args: List[str]) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.tar.gz"), *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "must be greater than 0" in done.stderr
    assert not (tmp_path / "x.tar.gz").exists()
