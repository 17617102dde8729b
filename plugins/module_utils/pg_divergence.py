# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Name the transactions an old PostgreSQL primary committed after the fork point (``pg_diverged_transactions``).

After an asynchronous crash failover the old primary may hold commits its standby never received.
Before ``pg_rewind`` discards them, this module (running on the old primary's host, the server
stopped) lists them:

1. **Fork point.** The new primary's history file for its current timeline (read over SQL with
   ``pg_read_file('pg_wal/<TLI>.history')``, which needs a superuser or ``pg_read_server_files``)
   says where each ancestor timeline ended in its lineage; the old primary's last timeline (the
   larger of its checkpoint's timeline and its newest ``.history`` file) ended at the fork LSN.
2. **Committed transactions after the fork.** ``pg_waldump`` reads the old ``pg_wal`` (read only)
   from the fork LSN to the end of valid WAL on the old timeline: every ``COMMIT`` record (with
   its subtransactions) gives an xid and a commit time; ``DELETE`` records are counted per relation.
   When the WAL ends at or before the fork, or holds no commit after it, nothing diverged and no
   server is started.
3. **Rows.** The data directory is copied to a scratch directory, the copy is started on a Unix
   socket only (no TCP, no archiving, no replication, read only by default) and runs crash recovery
   to the end of its own WAL. Every row of a user table whose ``xmin`` is one of those xids was
   written by a transaction committed after the fork; it is compared by primary key with the new
   primary: missing there = ``lost``, different = ``conflict``, equal = ``identical`` (counted).
4. The copy is stopped and deleted at the end, on failure too. The old data directory is only read.

Why not logical decoding: it needs ``wal_level=logical`` and a slot created *before* the fork
on the old primary (neither exists on AKIG's clusters). Why not decoding heap tuples from the raw
WAL: full-page images, TOAST, HOT and compression make that a re-implementation of the heap AM;
the copy's own crash recovery does it exactly, and ``xmin`` ties each row to its transaction.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.akig.runbooks.plugins.module_utils.pg_fence import (
    FenceError,
    Server,
    load_config,
    parse_waldump_end,
)
from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import (
    ConnectionOptions,
    PgError,
    connect,
    parse_lsn,
    timeline_of_walfile,
)
from ansible_collections.akig.runbooks.plugins.module_utils.procfs import process_cwd

try:
    import psycopg2
    from psycopg2 import sql as pgsql
except ImportError:  # pragma: no cover - the module reports the missing library
    psycopg2 = None  # type: ignore[assignment]
    pgsql = None  # type: ignore[assignment]

__all__ = [
    "DivergenceError",
    "WalScan",
    "csv_text",
    "fork_point",
    "format_lsn",
    "old_timeline",
    "parse_history",
    "parse_waldump_line",
    "run",
    "scan_waldump",
]

APPLICATION_NAME = "akig.runbooks.pg_diverged_transactions"
WALDUMP_TIMEOUT_S = 600
STOP_TIMEOUT_S = 10
BATCH = 500
MARGIN_BYTES = 64 * 1024 * 1024
SCRATCH_PREFIX = ".akig-divergence-"
SOCKET_PATH_MAX = 100
CSV_FIELDS = ("database", "table", "primary_key", "commit_time", "kind", "xid")
# the files of the old data directory the copy must not keep
DROP_IN_COPY = ("postmaster.pid", "postmaster.opts", "standby.signal", "recovery.signal", "current_logfiles")
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")

_HISTORY_RE = re.compile(r"^\s*(\d+)\s+([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})")
_RECORD_RE = re.compile(r"^rmgr:\s*(?P<rmgr>\S+)\s+len .*?tx:\s*(?P<tx>\d+), lsn: (?P<lsn>[0-9A-Fa-f]+/[0-9A-Fa-f]+),"
                        r".*?desc: (?P<desc>.*)$")
_COMMIT_RE = re.compile(r"^COMMIT(?P<prepared>_PREPARED)? (?:(?P<gid_xid>\d+): )?"
                        r"(?P<date>\d{4}-\d\d-\d\d) (?P<time>\d\d:\d\d:\d\d(?:\.\d+)?) (?P<zone>[A-Za-z0-9+:-]+)")
_SUBXACTS_RE = re.compile(r"subxacts:((?: \d+)+)")
_BLKREF_REL_RE = re.compile(r"blkref #0: rel (\d+)/(\d+)/(\d+)")
_HISTORY_FILE_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_SEGMENT_RE = re.compile(r'could not find file "([0-9A-Fa-f]{24})"')
_NO_RECORD_RE = re.compile(r"could not find a valid record after")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class DivergenceError(Exception):
    """The task cannot do what was asked; ``msg`` says why and what to do."""

    def __init__(self, msg: str, **result: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result


# --------------------------------------------------------------------------- pure helpers


def format_lsn(position: int) -> str:
    return "%X/%X" % (position >> 32, position & 0xFFFFFFFF)


def parse_history(text: str) -> List[Tuple[int, int]]:
    """``(timeline, end LSN)`` of every ancestor line of a timeline history file, oldest first.

    A line reads ``<parent TLI> <switch LSN> <reason>``: the parent timeline ended at the switch LSN.
    Comments and blank lines are skipped.
    """
    out: List[Tuple[int, int]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _HISTORY_RE.match(line)
        if not match:
            raise ValueError("unreadable history line %r" % line)
        out.append((int(match.group(1)), parse_lsn(match.group(2))))
    return out


def fork_point(old_tli: int, new_tli: int, history: Sequence[Tuple[int, int]]) -> Optional[int]:
    """The LSN at which the old primary's timeline ended in the new primary's lineage.

    None when the old primary is already on the new primary's timeline (it was rewound or cloned:
    nothing of its own is left). :class:`ValueError` when the old timeline is not an ancestor.
    """
    if old_tli == new_tli:
        return None
    if old_tli > new_tli:
        raise ValueError("the old primary is on timeline %d, later than the new primary's %d" % (old_tli, new_tli))
    for tli, end in history:
        if tli == old_tli:
            return end
    raise ValueError("timeline %d of the old primary is not in the new primary's history (timelines %s)" % (
        old_tli, ", ".join(str(tli) for tli, _end in history) or "none"))


def old_timeline(checkpoint_tli: Optional[int], wal_files: Iterable[str]) -> Optional[int]:
    """The last timeline a node wrote on: its checkpoint's, or its newest ``.history`` file's if later."""
    found = [int(match.group(1), 16) for match in (_HISTORY_FILE_RE.match(name) for name in wal_files) if match]
    candidates = [tli for tli in [checkpoint_tli] + found if tli]
    return max(candidates) if candidates else None


def _commit_time(match: "re.Match[str]") -> str:
    zone = match.group("zone")
    stamp = "%sT%s" % (match.group("date"), match.group("time"))
    return stamp + ("Z" if zone in ("UTC", "GMT", "Z", "+00") else " " + zone)


def parse_waldump_line(line: str) -> Optional[Dict[str, Any]]:
    """One ``pg_waldump`` record line as ``{kind, xid, lsn, ...}``, or None for records that do not matter.

    kinds: ``commit`` (``xid``, ``commit_time``, ``subxacts``) and ``delete`` (``xid``, ``rel``:
    (tablespace, database, relfilenode)).
    """
    match = _RECORD_RE.match(line)
    if not match:
        return None
    rmgr, desc, xid, lsn = match.group("rmgr"), match.group("desc"), int(match.group("tx")), match.group("lsn")
    if rmgr == "Transaction":
        commit = _COMMIT_RE.match(desc)
        if not commit:
            return None
        if commit.group("gid_xid"):
            xid = int(commit.group("gid_xid"))
        subs = _SUBXACTS_RE.search(desc)
        return {"kind": "commit", "xid": xid, "lsn": lsn, "commit_time": _commit_time(commit),
                "subxacts": [int(sub) for sub in subs.group(1).split()] if subs else []}
    if rmgr == "Heap" and desc.startswith("DELETE ") and xid:
        rel = _BLKREF_REL_RE.search(desc)
        if rel:
            return {"kind": "delete", "xid": xid, "lsn": lsn,
                    "rel": (int(rel.group(1)), int(rel.group(2)), int(rel.group(3)))}
    return None


@dataclass
class WalScan:
    """What ``pg_waldump`` found from the fork point on."""

    records: int = 0
    commits: List[Dict[str, Any]] = field(default_factory=list)
    deletes: Dict[int, "Counter[Tuple[int, int, int]]"] = field(default_factory=dict)
    end_lsn: Optional[str] = None
    error: str = ""

    def xid_owner(self) -> Dict[int, int]:
        """Every committed xid (subtransactions included) -> its top-level xid."""
        owner: Dict[int, int] = {}
        for commit in self.commits:
            owner[commit["xid"]] = commit["xid"]
            for sub in commit["subxacts"]:
                owner[sub] = commit["xid"]
        return owner

    def committed_deletes(self) -> "Counter[Tuple[int, int, int]]":
        owner = self.xid_owner()
        total: "Counter[Tuple[int, int, int]]" = Counter()
        for xid, counts in self.deletes.items():
            if xid in owner:
                total.update(counts)
        return total


def scan_waldump(lines: Iterable[str]) -> WalScan:
    """Fold ``pg_waldump`` output lines into a :class:`WalScan` (``end_lsn`` is set by the caller)."""
    scan = WalScan()
    for line in lines:
        if not line.startswith("rmgr:"):
            continue
        scan.records += 1
        record = parse_waldump_line(line)
        if record is None:
            continue
        if record["kind"] == "commit":
            scan.commits.append({key: record[key] for key in ("xid", "commit_time", "lsn", "subxacts")})
        else:
            scan.deletes.setdefault(record["xid"], Counter())[record["rel"]] += 1
    return scan


def pk_text(pk: Mapping[str, Any]) -> str:
    return ", ".join("%s=%s" % (name, value) for name, value in pk.items())


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The CSV file: database, table, primary key (``col=value, ...``), commit time, kind, xid."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        writer.writerow([row["database"], row["table"], pk_text(row["pk"]), row["commit_time"], row["kind"], row["xid"]])
    return buffer.getvalue()


def _tail(text: str, limit: int = 600) -> str:
    joined = " ".join((text or "").split())
    return ("..." + joined[-limit:]) if len(joined) > limit else (joined or "no output")


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return "%.0f %s" % (value, unit) if unit == "B" else "%.1f %s" % (value, unit)
        value /= 1024
    return "%d B" % size  # pragma: no cover


# --------------------------------------------------------------------------- the old data directory


def _check_data_dir(data_dir: str) -> None:
    if not os.path.exists(data_dir):
        raise DivergenceError("data_dir %s does not exist; give the data directory of the old primary (SHOW "
                              "data_directory on it when it ran; /var/lib/postgresql/15/main on Debian)" % data_dir)
    if not os.path.isdir(data_dir) or not os.path.isfile(os.path.join(data_dir, "PG_VERSION")):
        raise DivergenceError("data_dir %s is not a PostgreSQL data directory (no PG_VERSION file); give the directory "
                              "the old primary ran on, not its parent or /etc/postgresql/15/main" % data_dir)
    if not os.path.isfile(os.path.join(data_dir, "global", "pg_control")):
        raise DivergenceError("data_dir %s has no global/pg_control: it is not a complete data directory (an "
                              "interrupted base backup?); there is no history of its own to recover" % data_dir)


def _tree_size(path: str) -> int:
    """Bytes allocated under ``path`` (pg_wal followed when it is a symbolic link)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_blocks * 512
        if root == path and os.path.islink(os.path.join(path, "pg_wal")):
            total += _tree_size(os.path.realpath(os.path.join(path, "pg_wal")))
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    return total


def _tablespaces(data_dir: str) -> List[str]:
    try:
        return sorted(os.listdir(os.path.join(data_dir, "pg_tblspc")))
    except OSError:
        return []


def _processes_in(data_dir: str) -> List[int]:
    """Pids whose working directory is ``data_dir`` (PostgreSQL processes run in their data directory)."""
    real = os.path.realpath(data_dir)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    return sorted(int(entry) for entry in entries if entry.isdigit() and process_cwd(int(entry)) == real)


# --------------------------------------------------------------------------- the new primary


def _read_new_primary(opts: ConnectionOptions) -> Dict[str, Any]:
    try:
        conn = connect(opts, APPLICATION_NAME)
    except PgError as exc:
        raise DivergenceError("the new primary does not answer: %s. It must run and accept connections to find the "
                              "fork point; nothing was started or copied" % exc.msg) from None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery(), (SELECT system_identifier::text FROM pg_control_system()), "
                        "pg_walfile_name(CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END), "
                        "(SELECT timeline_id FROM pg_control_checkpoint())")
            in_recovery, system_id, walfile, checkpoint_tli = cur.fetchone()
            if in_recovery:
                raise DivergenceError("%s is a standby (in recovery), not the new primary; give the node that was "
                                      "promoted (login_host/login_port)" % opts.target)
            tli = max(t for t in (checkpoint_tli, timeline_of_walfile(walfile)) if t is not None)
            history_text = None
            if tli > 1:
                name = "pg_wal/%08X.history" % tli
                try:
                    cur.execute("SELECT pg_read_file(%s)", (name,))
                    history_text = cur.fetchone()[0]
                except psycopg2.errors.UndefinedFile:
                    history_text = None
                except psycopg2.errors.InsufficientPrivilege:
                    raise DivergenceError("%s refused pg_read_file('%s') to %s: log in as a superuser (or a role "
                                          "with pg_read_server_files) to read the timeline history" % (
                                              opts.target, name, opts.user)) from None
    finally:
        conn.close()
    if history_text is None:
        raise DivergenceError("%s has no timeline history file (timeline %d): it was never promoted, so there is no "
                              "fork point; give the node that was promoted in the failover (login_host/login_port)"
                              % (opts.target, tli))
    return {"timeline": tli, "system_identifier": system_id, "history": history_text}


# --------------------------------------------------------------------------- the run


@dataclass
class Job:
    params: Mapping[str, Any]
    check_mode: bool
    runner: Runner
    clock: Callable[[], float]
    actions: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)


def _server_for(params: Mapping[str, Any], runner: Runner, euid: Optional[int]) -> Server:
    try:
        cfg = load_config({"data_dir": params["data_dir"], "bin_dir": params.get("bin_dir"),
                           "os_user": params.get("os_user"), "state": "stopped"}, euid=euid, runner=runner)
    except FenceError as exc:
        raise DivergenceError(exc.msg.replace("server to stop", "old primary")) from None
    return Server(cfg, runner=runner)


def run(params: Mapping[str, Any], check_mode: bool, runner: Runner = subprocess.run,
        clock: Callable[[], float] = time.monotonic, euid: Optional[int] = None) -> Dict[str, Any]:
    """Do what the module does; return its result. :class:`DivergenceError` before or after any change."""
    started = clock()
    job = Job(params, check_mode, runner, clock)
    data_dir = os.path.abspath(os.path.expanduser(params["data_dir"]))
    _check_data_dir(data_dir)
    server = _server_for(dict(params, data_dir=data_dir), runner, euid)
    waldump = os.path.join(server.cfg.bin_dir, "pg_waldump")
    if not (os.path.isfile(waldump) and os.access(waldump, os.X_OK)):
        raise DivergenceError("pg_waldump not found (or not executable) in bin_dir %s; set bin_dir to the PostgreSQL "
                              "server programs of this data directory" % server.cfg.bin_dir)
    opts = ConnectionOptions.from_params(params)
    status = server.status()
    if status.running:
        raise DivergenceError("the old primary of %s runs (postmaster pid %s): refused. Stop and fence it first "
                              "(akig.runbooks.pg_fence state=stopped); its diverged history is read from a stopped "
                              "data directory only" % (data_dir, status.pid))
    leftovers = _processes_in(data_dir)
    if leftovers:
        raise DivergenceError("process(es) %s still run in %s although its postmaster is gone (backends orphaned by a "
                              "killed postmaster may still write WAL): stop them first (akig.runbooks.pg_fence "
                              "state=stopped kills the server's processes)" % (
                                  ", ".join(str(pid) for pid in leftovers), data_dir))
    control = server.controldata()
    try:
        wal_names = os.listdir(server.path("pg_wal"))
    except OSError as exc:
        raise DivergenceError("cannot list %s: %s" % (server.path("pg_wal"), exc)) from None
    old_tli = old_timeline(control.get("timeline"), wal_names)
    new = _read_new_primary(opts)
    result: Dict[str, Any] = {
        "changed": False, "data_dir": data_dir, "diverged": False, "fork_lsn": None, "old_wal_end_lsn": None,
        "diverged_wal_bytes": 0, "old_timeline": old_tli, "new_timeline": new["timeline"],
        "history_source": "pg_read_file('pg_wal/%08X.history') on %s" % (new["timeline"], opts.target),
        "old_cluster_state": control.get("cluster_state"), "transactions": [], "rows": [], "rows_truncated": False,
        "lost_count": 0, "conflict_count": 0, "counts": {}, "deletes_per_table": {}, "files": {},
        "actions": job.actions, "timings": job.timings, "warnings": job.warnings,
    }
    if control.get("system_identifier") and new["system_identifier"] != control["system_identifier"]:
        raise DivergenceError("%s is not a copy of the same cluster: system identifier %s, the data directory's is %s; "
                              "give the new primary of this cluster" % (opts.target, new["system_identifier"],
                                                                        control["system_identifier"]))
    try:
        history = parse_history(new["history"])
        fork = fork_point(old_tli or 0, new["timeline"], history)
    except ValueError as exc:
        raise DivergenceError("cannot find the fork point: %s. The old primary is not on a branch the new primary "
                              "went through; the lost transactions cannot be told apart this way (keep a copy of "
                              "%s before rewinding it)" % (exc, data_dir)) from None
    if fork is None:
        job.actions.append("the old primary is on the new primary's timeline %d already (rewound or cloned): nothing "
                           "of its own is left to compare" % new["timeline"])
        job.timings["total_s"] = round(clock() - started, 3)
        return result
    result["fork_lsn"] = format_lsn(fork)
    job.actions.append("fork point %s: where timeline %d ends in the history of %s (timeline %d)" % (
        result["fork_lsn"], old_tli, opts.target, new["timeline"]))

    scan = _waldump(job, server, waldump, old_tli, fork, control.get("segment_size"))
    result["old_wal_end_lsn"] = scan.end_lsn
    end = parse_lsn(scan.end_lsn) if scan.end_lsn else fork
    result["diverged_wal_bytes"] = max(0, end - fork)
    result["transactions"] = [{"xid": c["xid"], "commit_time": c["commit_time"]} for c in scan.commits]
    result["diverged"] = bool(scan.commits)
    if not scan.commits:
        job.actions.append("the old primary committed nothing after the fork point (%s of WAL after it, %d records): "
                           "nothing diverged" % (_human(result["diverged_wal_bytes"]), scan.records))
        job.timings["total_s"] = round(clock() - started, 3)
        return result
    job.actions.append("%d transaction(s) committed on the old primary after the fork point (%s of WAL)" % (
        len(scan.commits), _human(result["diverged_wal_bytes"])))

    tablespaces = _tablespaces(data_dir)
    if tablespaces:
        raise DivergenceError("%s has tablespaces outside the data directory (pg_tblspc: %s): a copy cannot be started "
                              "without touching them; copy the data directory and its tablespaces by hand" % (
                                  data_dir, ", ".join(tablespaces)), **_partial(result))
    parent = os.path.abspath(os.path.expanduser(params.get("scratch_dir") or os.path.dirname(data_dir)))
    size = _tree_size(data_dir)
    need = int(size * 1.1) + MARGIN_BYTES
    try:
        free = shutil.disk_usage(parent).free
    except OSError as exc:
        raise DivergenceError("scratch_dir %s cannot be used: %s" % (parent, exc), **_partial(result)) from None
    result["copy_bytes"] = size
    if free < need:
        raise DivergenceError("not enough free space in %s for a copy of %s: it needs %s (the data directory, 10%% and "
                              "64 MiB for its recovery), %s are free; free space there or set scratch_dir to a "
                              "filesystem with room" % (parent, data_dir, _human(need), _human(free)), **_partial(result))
    if check_mode:
        job.actions.append("would copy %s (%s) into %s, start the copy on a Unix socket only and compare the rows of "
                           "these transactions with the new primary" % (data_dir, _human(size), parent))
        job.timings["total_s"] = round(clock() - started, 3)
        return result

    rows, counts, deletes = _compare_on_copy(job, server, parent, opts, scan, int(params.get("start_timeout") or 600))
    result["deletes_per_table"] = deletes
    result["counts"] = counts
    result["lost_count"] = sum(1 for row in rows if row["kind"] == "lost")
    result["conflict_count"] = sum(1 for row in rows if row["kind"] == "conflict")
    max_rows = params.get("max_rows")
    max_rows = 1000 if max_rows is None else int(max_rows)
    result["rows"] = rows[:max_rows]
    result["rows_truncated"] = len(rows) > max_rows
    if params.get("dest"):
        result["files"] = _write_files(params["dest"], result, rows)
        result["changed"] = True
    job.timings["total_s"] = round(clock() - started, 3)
    return result


def _partial(result: Mapping[str, Any]) -> Dict[str, Any]:
    return {key: result[key] for key in ("fork_lsn", "old_wal_end_lsn", "transactions", "diverged", "actions")}


def _waldump(job: Job, server: Server, waldump: str, tli: int, fork: int, segment_size: Optional[int]) -> WalScan:
    """pg_waldump of the old pg_wal from the fork point on, on the old timeline (reads files only)."""
    started = job.clock()
    argv = list(server.cfg.prefix) + [waldump, "--path=%s" % server.path("pg_wal"), "--timeline=%d" % tli,
                                      "--start=%s" % format_lsn(fork)]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "_ANSIBLE", "PG"))}
    env.update(LC_ALL="C", LANG="C", TZ="UTC")
    try:
        proc = subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, errors="replace")
    except OSError as exc:
        raise DivergenceError("could not run pg_waldump: %s" % exc) from None
    try:
        scan = scan_waldump(proc.stdout)  # type: ignore[arg-type]
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait(timeout=WALDUMP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise DivergenceError("pg_waldump did not finish within %d s" % WALDUMP_TIMEOUT_S) from None
    scan.error = stderr
    job.timings["waldump_s"] = round(job.clock() - started, 3)
    if scan.records == 0:
        missing = _SEGMENT_RE.search(stderr)
        if _NO_RECORD_RE.search(stderr) or (missing and segment_size and fork % segment_size == 0):
            scan.end_lsn = format_lsn(fork)  # the WAL ends at (or before) the fork point
            return scan
        segment = missing.group(1) if missing else ("of the fork point" if "could not find any WAL file" in stderr
                                                    else None)
        if segment:
            raise DivergenceError(
                "the old primary's WAL from the fork point %s on is no longer in %s (segment %s is missing: recycled "
                "after a checkpoint); its transactions after the fork cannot be listed. Look for the segment in the WAL "
                "archive, or rejoin without the list (-e pg_failover_lost_transactions=false) after copying %s "
                "aside" % (format_lsn(fork), server.path("pg_wal"), segment, server.cfg.data_dir))
    scan.end_lsn = parse_waldump_end(stderr, segment_size)
    if scan.end_lsn is None:
        raise DivergenceError("pg_waldump found no end of the old primary's WAL after %s (rc %s: %s)" % (
            format_lsn(fork), proc.returncode, _tail(stderr)))
    return scan


# --------------------------------------------------------------------------- the scratch copy


def _own(path: str, server: Server, mode: int) -> None:
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, server.cfg.uid, server.cfg.gid)


def _write_own(path: str, text: str, server: Server) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    _own(path, server, 0o600)


def _copy_conf(port: int, sockdir: str, control_values: Mapping[str, str]) -> str:
    prepared = control_values.get("max_prepared_xacts setting", "0")
    return "\n".join([
        "# written by akig.runbooks.pg_diverged_transactions: a throwaway copy, Unix socket only",
        "listen_addresses = ''",
        "port = %d" % port,
        "unix_socket_directories = '%s'" % sockdir.replace("'", "''"),
        "unix_socket_permissions = 0700",
        "max_connections = 10",
        "superuser_reserved_connections = 3",
        "max_prepared_transactions = %s" % (prepared if prepared.isdigit() else "0"),
        "shared_buffers = 32MB",
        "archive_mode = off",
        "max_wal_senders = 0",
        "max_replication_slots = 0",
        "max_logical_replication_workers = 0",
        "hot_standby = off",
        "shared_preload_libraries = ''",
        "default_transaction_read_only = on",
        "autovacuum = off",
        "fsync = off",
        "synchronous_commit = off",
        "ssl = off",
        "logging_collector = off",
        "TimeZone = 'UTC'",
        "cluster_name = 'akig-divergence-copy'",
        "",
    ])


def _make_copy(job: Job, server: Server, parent: str) -> Tuple[str, str]:
    """(scratch root, copy data dir): a private copy of the data directory, its symbolic links resolved."""
    started = job.clock()
    root = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent)
    _own(root, server, 0o700)
    copy = os.path.join(root, "data")
    proc = job.runner(["cp", "-a", "--", server.cfg.data_dir, copy], cwd="/", capture_output=True, text=True,
                      check=False, stdin=subprocess.DEVNULL, timeout=3600)
    if proc.returncode != 0:
        raise DivergenceError("copying %s to %s failed (rc %d): %s" % (server.cfg.data_dir, copy, proc.returncode,
                                                                       _tail(proc.stderr)))
    wal = os.path.join(copy, "pg_wal")
    if os.path.islink(wal):
        target = os.path.realpath(os.path.join(server.cfg.data_dir, "pg_wal"))
        os.unlink(wal)
        proc = job.runner(["cp", "-a", "--", target, wal], cwd="/", capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL, timeout=3600)
        if proc.returncode != 0:
            raise DivergenceError("copying %s (pg_wal) failed: %s" % (target, _tail(proc.stderr)))
    # any other link would let the copy write outside the scratch directory (configuration, certificates)
    for dirpath, dirs, files in os.walk(copy):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                os.unlink(path)
                job.actions.append("removed the symbolic link %s from the copy" % os.path.relpath(path, copy))
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]
    for name in DROP_IN_COPY:
        try:
            os.unlink(os.path.join(copy, name))
        except FileNotFoundError:
            pass
    # the copy has no replication: its slots would need max_replication_slots and hold its WAL for nothing
    slots = os.path.join(copy, "pg_replslot")
    for name in os.listdir(slots) if os.path.isdir(slots) else []:
        shutil.rmtree(os.path.join(slots, name), ignore_errors=True)
    job.timings["copy_s"] = round(job.clock() - started, 3)
    return root, copy


def _start_copy(job: Job, server: Server, root: str, copy: str, timeout: int) -> Tuple[Server, str, int]:
    port = int(job.params.get("scratch_port") or 54329)
    sockdir = os.path.join(root, "sock")
    if len(sockdir) + 20 > SOCKET_PATH_MAX:
        sockdir = tempfile.mkdtemp(prefix="akig-div-", dir="/tmp")
    else:
        os.mkdir(sockdir)
    _own(sockdir, server, 0o700)
    control_rc, control_out, _err = server.run([server.cfg.pg_controldata, server.cfg.data_dir], 30)
    values: Dict[str, str] = {}
    if control_rc == 0:
        for line in control_out.splitlines():
            name, sep, value = line.partition(":")
            if sep:
                values[name.strip()] = value.strip()
    _write_own(os.path.join(copy, "postgresql.conf"), _copy_conf(port, sockdir, values), server)
    _write_own(os.path.join(copy, "postgresql.auto.conf"), "# emptied in the akig.runbooks divergence copy\n", server)
    # the socket directory is private (0700), so trust on it reaches no one but root and the server's OS user
    _write_own(os.path.join(copy, "pg_hba.conf"), "local all all trust\n", server)
    _write_own(os.path.join(copy, "pg_ident.conf"), "", server)
    copy_server = Server(replace(server.cfg, data_dir=copy), runner=job.runner)
    started = job.clock()
    rc, out, err = copy_server.pg_ctl("-l", os.path.join(root, "server.log"), "-w", "-t", str(timeout), "start",
                                      timeout=timeout + 30)
    job.timings["recovery_s"] = round(job.clock() - started, 3)
    if rc != 0:
        try:
            with open(os.path.join(root, "server.log"), encoding="utf-8", errors="replace") as handle:
                log = handle.read()
        except OSError:
            log = ""
        raise DivergenceError("the copy of %s did not start (rc %s): %s" % (
            server.cfg.data_dir, rc, _tail(log or err or out)))
    _wait_recovered(job, sockdir, port, started, timeout, root)
    job.timings["recovery_s"] = round(job.clock() - started, 3)
    job.actions.append("started a copy of %s on the Unix socket %s only; its crash recovery took %.2f s" % (
        server.cfg.data_dir, sockdir, job.timings["recovery_s"]))
    return copy_server, sockdir, port


def _wait_recovered(job: Job, sockdir: str, port: int, started: float, timeout: int, root: str) -> None:
    """Wait until the copy accepts connections and is out of recovery (pg_ctl -w may return before that)."""
    last = ""
    while True:
        try:
            conn = psycopg2.connect(host=sockdir, port=port, user=job.params.get("login_user") or "postgres",
                                    dbname="postgres", connect_timeout=5, application_name=APPLICATION_NAME)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery()")
                    if not cur.fetchone()[0]:
                        return
                    last = "still in recovery"
            finally:
                conn.close()
        except psycopg2.OperationalError as exc:
            last = " ".join(str(exc).split())
        if job.clock() - started > timeout:
            raise DivergenceError("the copy of %s did not finish its recovery within %d s (%s); see %s" % (
                job.params["data_dir"], timeout, last, os.path.join(root, "server.log")))
        time.sleep(0.1)


def _stop_copy(copy_server: Server) -> None:
    rc, _out, _err = copy_server.pg_ctl("-m", "immediate", "-w", "-t", str(STOP_TIMEOUT_S), "stop",
                                        timeout=STOP_TIMEOUT_S + 10)
    if rc == 0:
        return
    pid = copy_server.pid_from_file()
    if pid is not None:
        try:
            copy_server.kill(pid, [])
        except FenceError:
            pass


_TABLES_SQL = """
SELECT n.nspname, c.relname,
       (SELECT array_agg(a.attname::text ORDER BY k.ord)
          FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid AND i.indisprimary),
       (SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.ord)
          FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid AND i.indisprimary)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND c.relpersistence = 'p'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
 ORDER BY 1, 2
"""


def _compare_on_copy(job: Job, server: Server, parent: str, opts: ConnectionOptions, scan: WalScan,
                     timeout: int) -> Tuple[List[Dict[str, Any]], Dict[str, Any], Dict[str, int]]:
    root: Optional[str] = None
    sockdir: Optional[str] = None
    copy_server: Optional[Server] = None
    try:
        root, copy = _make_copy(job, server, parent)
        copy_server, sockdir, port = _start_copy(job, server, root, copy, timeout)
        started = job.clock()
        try:
            compared = _compare(job, sockdir, port, opts, scan)
        except psycopg2.Error as exc:
            raise DivergenceError("comparing the rows of the copy with the new primary failed: %s" % " ".join(
                str(exc).split())) from None
        job.timings["compare_s"] = round(job.clock() - started, 3)
        return compared
    finally:
        if copy_server is not None:
            _stop_copy(copy_server)
        for path in (root, sockdir):
            if path and os.path.exists(path):
                shutil.rmtree(path, ignore_errors=True)
                if os.path.exists(path):
                    job.warnings.append("could not remove the scratch directory %s; remove it by hand" % path)
        if root:
            job.actions.append("stopped the copy and removed %s" % root)


def _copy_connect(sockdir: str, port: int, user: str, dbname: str) -> Any:
    conn = psycopg2.connect(host=sockdir, port=port, user=user, dbname=dbname, application_name=APPLICATION_NAME,
                            connect_timeout=10)
    conn.autocommit = True
    return conn


def _compare(job: Job, sockdir: str, port: int, opts: ConnectionOptions, scan: WalScan
             ) -> Tuple[List[Dict[str, Any]], Dict[str, Any], Dict[str, int]]:
    owner = scan.xid_owner()
    commit_time = {c["xid"]: c["commit_time"] for c in scan.commits}
    xids = [str(xid) for xid in sorted(owner)]
    deletes = scan.committed_deletes()
    rows: List[Dict[str, Any]] = []
    counts: Dict[str, Any] = {}
    deletes_per_table: Dict[str, int] = {}
    first = _copy_connect(sockdir, port, opts.user, opts.dbname)
    try:
        with first.cursor() as cur:
            cur.execute("SELECT oid, datname, dattablespace FROM pg_database WHERE datallowconn AND NOT datistemplate "
                        "ORDER BY datname")
            databases = cur.fetchall()
    finally:
        first.close()
    for db_oid, dbname, db_space in databases:
        conn = _copy_connect(sockdir, port, opts.user, dbname)
        try:
            with conn.cursor() as cur:
                for (spc, dbo, rel), number in sorted(deletes.items()):
                    if dbo != db_oid:
                        continue
                    cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                                "c.relnamespace WHERE c.oid = pg_filenode_relation(%s, %s)",
                                (0 if spc == db_space else spc, rel))
                    found = cur.fetchone()
                    if found and found[0] not in SYSTEM_SCHEMAS and not found[0].startswith("pg_"):
                        key = "%s.%s.%s" % (dbname, found[0], found[1])
                        deletes_per_table[key] = deletes_per_table.get(key, 0) + number
                cur.execute(_TABLES_SQL)
                tables = cur.fetchall()
                for schema, table, pk_cols, pk_types in tables:
                    key = "%s.%s.%s" % (dbname, schema, table)
                    ident = pgsql.SQL("{}.{}").format(pgsql.Identifier(schema), pgsql.Identifier(table))
                    if not pk_cols:
                        cur.execute(pgsql.SQL("SELECT count(*) FROM ONLY {} WHERE xmin = ANY(%s::text[]::xid[])").format(
                            ident), (xids,))
                        number = cur.fetchone()[0]
                        if number:
                            counts.setdefault(key, _zero())["without_key"] = number
                        continue
                    cur.execute(pgsql.SQL("SELECT xmin::text, {}, md5(ROW(akig_row.*)::text) FROM ONLY {} AS akig_row "
                                          "WHERE xmin = ANY(%s::text[]::xid[])").format(
                        pgsql.SQL(", ").join(pgsql.SQL("{}::text").format(pgsql.Identifier(col)) for col in pk_cols),
                        ident), (xids,))
                    found_rows = cur.fetchall()
                    if not found_rows:
                        continue
                    on_new = _read_new(opts, dbname, ident, pk_cols, pk_types,
                                       [tuple(row[1:-1]) for row in found_rows])
                    entry = counts.setdefault(key, _zero())
                    for row in found_rows:
                        pk = tuple(row[1:-1])
                        xid = owner[int(row[0])]
                        if pk not in on_new:
                            kind = "lost"
                        elif on_new[pk] != row[-1]:
                            kind = "conflict"
                        else:
                            entry["identical"] += 1
                            continue
                        entry[kind] += 1
                        rows.append({"database": dbname, "table": "%s.%s" % (schema, table),
                                     "pk": dict(zip(pk_cols, pk)), "commit_time": commit_time[xid], "xid": xid,
                                     "kind": kind})
        finally:
            conn.close()
    rows.sort(key=lambda row: (row["commit_time"], row["xid"], row["database"], row["table"]))
    compared = sum(entry["lost"] + entry["conflict"] + entry["identical"] for entry in counts.values())
    job.actions.append("compared the %d keyed row(s) written after the fork with the new primary: %d lost, %d in "
                       "conflict, %d identical" % (compared, sum(1 for r in rows if r["kind"] == "lost"),
                                                   sum(1 for r in rows if r["kind"] == "conflict"),
                                                   compared - len(rows)))
    return rows, counts, deletes_per_table


def _zero() -> Dict[str, int]:
    return {"lost": 0, "conflict": 0, "identical": 0, "without_key": 0}


def _read_new(opts: ConnectionOptions, dbname: str, ident: Any, pk_cols: Sequence[str], pk_types: Sequence[str],
              keys: Sequence[Tuple[str, ...]]) -> Dict[Tuple[str, ...], str]:
    """primary key (as text) -> md5 of the row on the new primary, for the keys that exist there."""
    target = replace_opts(opts, dbname)
    try:
        conn = connect(target, APPLICATION_NAME)
    except PgError as exc:
        if "does not exist" in exc.msg:
            return {}  # the database is not on the new primary: every row is lost
        raise DivergenceError("cannot compare with the new primary: %s" % exc.msg) from None
    found: Dict[Tuple[str, ...], str] = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (ident.as_string(conn),))
            if cur.fetchone()[0] is None:
                return {}  # the table is not on the new primary: every row is lost
            cols = pgsql.SQL(", ").join(pgsql.Identifier(col) for col in pk_cols)
            casts = pgsql.SQL(", ").join(pgsql.SQL("%s::" + typ) for typ in pk_types)
            for start in range(0, len(keys), BATCH):
                batch = keys[start:start + BATCH]
                values = pgsql.SQL(", ").join(pgsql.SQL("({})").format(casts) for _key in batch)
                query = pgsql.SQL("SELECT {}, md5(ROW(akig_row.*)::text) FROM ONLY {} AS akig_row WHERE ({}) IN "
                                  "(VALUES {})").format(
                    pgsql.SQL(", ").join(pgsql.SQL("{}::text").format(pgsql.Identifier(col)) for col in pk_cols),
                    ident, cols, values)
                cur.execute(query, [value for key in batch for value in key])
                for row in cur.fetchall():
                    found[tuple(row[:-1])] = row[-1]
    finally:
        conn.close()
    return found


def replace_opts(opts: ConnectionOptions, dbname: str) -> ConnectionOptions:
    return ConnectionOptions(host=opts.host, port=opts.port, user=opts.user, password=opts.password, dbname=dbname,
                             connect_timeout=opts.connect_timeout)


def _write_files(dest: str, result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Dict[str, str]:
    dest = os.path.abspath(os.path.expanduser(dest))
    os.makedirs(dest, mode=0o700, exist_ok=True)
    files = {"json": os.path.join(dest, "lost-transactions.json"), "csv": os.path.join(dest, "lost-transactions.csv")}
    document = {key: result[key] for key in ("data_dir", "diverged", "fork_lsn", "old_wal_end_lsn", "old_timeline",
                                             "new_timeline", "transactions", "counts", "deletes_per_table",
                                             "lost_count", "conflict_count")}
    document["rows"] = list(rows)
    for path, text in ((files["json"], json.dumps(document, indent=1, sort_keys=True) + "\n"),
                       (files["csv"], csv_text(rows))):
        handle, tmp = tempfile.mkstemp(prefix=".akig-", dir=dest)
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return files
