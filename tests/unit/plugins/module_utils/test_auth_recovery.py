"""RB-P1-002's pure logic: keyed fingerprints, env files, the drift findings, the auth log counts."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from ansible_collections.akig.runbooks.plugins.module_utils import auth_recovery as ar

GOOD, BAD = "a" * 16, "b" * 16


def host(running, file, backup, source="app"):
    return {"running": running, "running_source": source, "file": file, "backup": backup, "backup_path": "/b"}


def test_fingerprint_is_keyed_and_never_the_value() -> None:
    one, two = ar.hmac_fingerprint("k1" * 8, "s3cret-value"), ar.hmac_fingerprint("k2" * 8, "s3cret-value")
    assert one != two and len(one) == 16 and "s3cret" not in one
    assert ar.hmac_fingerprint("k1" * 8, "s3cret-value") == one
    with pytest.raises(ValueError):
        ar.hmac_fingerprint("", "x")


def test_env_value_reads_like_the_app() -> None:
    text = "# c\nexport JWT_SECRET='q u o t e d'\nA=1 # note\nJWT_SECRET=\"la\\\"st\"\n"
    assert ar.env_value(text, "JWT_SECRET") == 'la"st'  # the last line wins
    assert ar.env_value(text, "A") == "1"
    assert ar.env_value(text, "MISSING") is None
    with pytest.raises(ar.EnvFileError) as err:
        ar.env_value("JWT_SECRET=\"open\n", "JWT_SECRET")
    assert "open" not in str(err.value)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\r\n"), min_size=1, max_size=60))
def test_replace_env_value_round_trips_and_keeps_the_other_lines(value: str) -> None:
    text = "HOST=x\nDATABASE_URL=postgresql://u:p@db-2:5432/akig_db\nexport JWT_SECRET=old # c\nZ='1'\n"
    try:
        out = ar.replace_env_value(text, "JWT_SECRET", value)
    except ar.EnvFileError:
        return  # a value the app could not read back the same is refused, never written
    assert ar.env_value(out, "JWT_SECRET") == value
    assert [ln for ln in out.splitlines() if "JWT_SECRET" not in ln] == [ln for ln in text.splitlines() if "JWT_SECRET" not in ln]


def test_environ_value() -> None:
    raw = b"PATH=/bin\0JWT_SECRET=abc=def\0X=1\0"
    assert ar.environ_value(raw, "JWT_SECRET") == "abc=def"
    assert ar.environ_value(raw, "NOPE") is None


def test_no_drift() -> None:
    out = ar.drift_findings({"app-1": host(GOOD, GOOD, GOOD), "app-2": host(GOOD, GOOD, GOOD)})
    assert out["findings"] == [] and out["restore"] == [] and out["problems"] == [] and not out["drifted"]
    assert out["staging"] == "skipped"


def test_drift_everywhere() -> None:
    out = ar.drift_findings({"app-1": host(BAD, BAD, GOOD), "app-2": host(BAD, BAD, GOOD)}, GOOD)
    assert [f["kind"] for f in out["findings"]] == ["secret_drift_all_backends"]
    assert out["restore"] == ["app-1", "app-2"] and out["problems"] == [] and out["staging"] == "equal"


def test_drift_on_one_of_two_backends_is_its_own_finding() -> None:
    out = ar.drift_findings({"app-1": host(GOOD, GOOD, GOOD), "app-2": host(BAD, BAD, GOOD)}, "c" * 16)
    assert [(f["kind"], f["hosts"]) for f in out["findings"]] == [("secret_drift_one_backend", ["app-2"])]
    assert out["restore"] == ["app-2"] and out["problems"] == [] and out["staging"] == "differs"


def test_drift_on_one_of_three_whose_backup_holds_the_drifted_secret_is_refused() -> None:
    out = ar.drift_findings({"a": host(GOOD, GOOD, GOOD), "b": host(GOOD, GOOD, GOOD), "c": host(BAD, BAD, BAD)})
    assert out["findings"][0]["kind"] == "secret_drift_one_backend" and out["restore"] == []
    assert "nothing to restore" in out["problems"][0]


def test_two_backends_whose_backups_disagree_are_refused() -> None:
    out = ar.drift_findings({"app-1": host(GOOD, GOOD, GOOD), "app-2": host(BAD, BAD, BAD)})
    assert out["restore"] == [] and out["problems"] and "a backup holds a drifted secret" in out["problems"][0]


def test_file_changed_but_process_not_reloaded() -> None:
    out = ar.drift_findings({"app-1": host(GOOD, BAD, GOOD), "app-2": host(GOOD, GOOD, GOOD)})
    assert out["restore"] == ["app-1"] and out["restart"] == ["app-1"]
    assert "secret_not_loaded" in [f["kind"] for f in out["findings"]]


def test_running_secret_unknown_counts_as_drift() -> None:
    out = ar.drift_findings({"app-1": host(None, GOOD, GOOD, "unknown"), "app-2": host(GOOD, GOOD, GOOD)})
    assert out["restore"] == ["app-1"] and out["restart"] == ["app-1"]


def line(msg: str, ts: str = "2026-11-30T16:00:01.000Z", **fields) -> str:
    return "2026-11-30T16:00:01: " + json.dumps({"ts": ts, "level": "warn", "msg": msg, **fields})


def test_count_auth_failures_by_class_and_rate() -> None:
    lines = [line("auth failure", **{"class": "invalid_signature"})] * 3 + [
        line("auth failure", **{"class": "session_corrupt"}),
        line("auth failure", **{"class": "weird"}),
        line("request", path="/api/contracts", status=401),
        line("request", path="/api/health", status=200),
        "garbage without json",
        "2026-11-30T16:00:01: {not json",
    ] + [line("request", path="/api/login", status=200)] * 9
    out = ar.count_auth_failures(lines)
    assert out["classes"]["invalid_signature"] == 3 and out["classes"]["session_corrupt"] == 1 and out["classes"]["other"] == 1
    assert out["failures"] == 5 and out["requests"] == 10 and out["unauthorized"] == 1 and out["error_rate"] == 0.5
    assert set(ar.AUTH_FAILURE_CLASSES) <= set(out["classes"])


def test_count_auth_failures_since() -> None:
    lines = [line("auth failure", ts="2026-11-30T15:59:59.999Z", **{"class": "expired"}),
             line("auth failure", ts="2026-11-30T16:00:00.500Z", **{"class": "expired"})]
    assert ar.count_auth_failures(lines, "2026-11-30T16:00:00.100000Z")["failures"] == 1
    assert ar.count_auth_failures([], None) == ar.count_auth_failures([])
    merged = ar.merge_counts([ar.count_auth_failures(lines), ar.count_auth_failures(lines)])
    assert merged["failures"] == 4 and merged["classes"]["expired"] == 4 and merged["error_rate"] == 0.0
