#!/usr/bin/env python3
"""Benchmark the removal of Redis keys by pattern (akig.runbooks.redis_keys): time, keys/s, bounded memory.

    .venv/bin/python benchmarks/redis_flush.py [--keys 100000] [--batch-size 1000] [--value-bytes 200]

Starts its own redis-server on a free loopback port (127.0.0.1:56500-56599, a random password, no persistence),
fills database 0 with --keys session-like keys matching ``bench:sess:*`` (JSON strings of about --value-bytes with
a TTL) and as many keys that do not match (``bench:keep:*``), then removes the matching ones three times:

  module_utils 10k   the removal code (plugins/module_utils/redis_keys.py) in a child process, on 10 % of the keys
  module_utils full  the same on all of them; the child prints its peak RSS after the first 10 000 keys and at the end
  ansible            ``ansible localhost -m akig.runbooks.redis_keys`` (the real module through ansible); the peak
                     RSS of the module's process is sampled from /proc while it runs (VmHWM)

For each: keys removed, seconds, keys/s, peak RSS; the backup (SCAN + DUMP + PTTL streamed to a JSON-lines file,
fsync'd per batch before the batch is UNLINKed) is part of the time. After each run it checks that every
non-matching key is still there with its value, and that the backup holds one line per removed key.
A benchmark, not a test: it prints figures and exits 1 only when it cannot run or a check fails.
It touches no other Redis, and stops its server and removes its temporary directory on exit.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
COLLECTIONS = REPO / ".collections"
PORTS = range(56500, 56600)
MATCH, KEEP = "bench:sess:", "bench:keep:"

CHILD = r"""
import json, resource, sys, time
from ansible_collections.akig.runbooks.plugins.module_utils.redis_keys import Server, remove_keys

def hwm_kb():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

args = json.loads(sys.argv[1])
at_10k = {}
def progress(removed):
    if removed >= 10000 and not at_10k:
        at_10k['kb'] = hwm_kb()
start_kb = hwm_kb()
t0 = time.monotonic()
result = remove_keys(Server(host='127.0.0.1', port=args['port'], password=args['password']), 0, args['pattern'],
                     args['backup_dir'], args['batch_size'], progress=progress)
seconds = time.monotonic() - t0
print(json.dumps({'removed': result['removed'], 'seconds': seconds, 'backup_path': result['backup_path'],
                  'rss_start_kb': start_kb, 'rss_10k_kb': at_10k.get('kb'), 'rss_peak_kb': hwm_kb()}))
"""


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port in 56500-56599 on 127.0.0.1")


def start_redis(workdir: Path, password: str) -> tuple[subprocess.Popen, int]:
    import redis
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    conf = workdir / "redis.conf"
    conf.write_text("bind 127.0.0.1\nport %d\nsave \"\"\nappendonly no\nrequirepass %s\ndir %s\nlogfile %s\n"
                    % (port, password, workdir, workdir / "redis.log"))
    conf.chmod(0o600)
    proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return proc, port
        except redis.RedisError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start on 127.0.0.1:%d (see %s)" % (port, workdir / "redis.log"))


def value(prefix: str, index: int, size: int) -> bytes:
    body = json.dumps({"user_id": index, "email": "user%d@akig.example" % index, "kind": prefix})
    return (body[:-1] + ', "pad": "' + "x" * max(0, size - len(body) - 11) + '"}').encode()


def fill(client: Any, prefix: str, count: int, size: int, ttl: Optional[int]) -> None:
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        pipe.set("%s%d" % (prefix, index), value(prefix, index, size), ex=ttl)
        if index % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def check_kept(client: Any, count: int, size: int) -> None:
    for start in range(0, count, 5000):
        names = ["%s%d" % (KEEP, index) for index in range(start, min(count, start + 5000))]
        got = client.mget(names)
        for offset, raw in enumerate(got):
            if raw != value(KEEP, start + offset, size):
                raise SystemExit("FAILED: %s changed or disappeared" % names[offset])
    left = sum(1 for _ in client.scan_iter(match=MATCH + "*", count=5000))
    if left:
        raise SystemExit("FAILED: %d matching keys are left" % left)


def backup_lines(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.startswith('{"at_ms"'))


def sample_hwm(pid_holder: dict[str, Any], stop: threading.Event) -> None:
    """The highest VmHWM of a running AnsiballZ_redis_keys process (the module), sampled every 10 ms."""
    while not stop.is_set():
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path("/proc/%s/cmdline" % entry).read_bytes()
                if b"AnsiballZ_redis_keys" not in cmdline:
                    continue
                for line in Path("/proc/%s/status" % entry).read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        pid_holder["kb"] = max(pid_holder.get("kb", 0), kb)
            except OSError:
                continue
        stop.wait(0.01)


def report(label: str, removed: int, seconds: float, rss: str) -> None:
    print("%-18s removed %7d keys in %7.2f s = %8.0f keys/s   peak RSS %s" % (label, removed, seconds,
                                                                          removed / seconds if seconds else 0, rss))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100000, help="matching keys (and as many not matching)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--value-bytes", type=int, default=200)
    args = parser.parse_args()
    sys.path.insert(0, str(COLLECTIONS))
    import redis

    workdir = Path(tempfile.mkdtemp(prefix="akig-bench-redis-"))
    password = secrets.token_hex(16)
    proc, port = start_redis(workdir, password)
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=password)
        print("redis-server %s on 127.0.0.1:%d; %d matching keys (%s*) + %d not matching (%s*), ~%d B values, "
              "batch %d" % (client.info()["redis_version"], port, args.keys, MATCH, args.keys, KEEP, args.value_bytes,
                            args.batch_size))
        fill(client, KEEP, args.keys, args.value_bytes, None)
        small = max(1, args.keys // 10)
        for label, count in (("module_utils 10%", small), ("module_utils full", args.keys)):
            fill(client, MATCH, count, args.value_bytes, 3600)
            child_args = {"port": port, "password": password, "pattern": MATCH + "*",
                          "backup_dir": str(workdir / "backups"), "batch_size": args.batch_size}
            out = subprocess.run([str(PYTHON), "-c", CHILD, json.dumps(child_args)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            data = json.loads(out)
            rss = "%.1f MiB (start %.1f MiB%s)" % (data["rss_peak_kb"] / 1024, data["rss_start_kb"] / 1024,
                                                  "" if data["rss_10k_kb"] is None else
                                                  ", after 10 000 keys %.1f MiB" % (data["rss_10k_kb"] / 1024))
            report(label, data["removed"], data["seconds"], rss)
            check_kept(client, args.keys, args.value_bytes)
            if data["removed"] != count or backup_lines(data["backup_path"]) != count:
                raise SystemExit("FAILED: removed %d, backup holds %d, expected %d"
                                 % (data["removed"], backup_lines(data["backup_path"]), count))
            os.remove(data["backup_path"])

        fill(client, MATCH, args.keys, args.value_bytes, 3600)
        home = workdir / "ansible"
        home.mkdir()
        (home / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = false\n")
        module_args = {"login_host": "127.0.0.1", "login_port": port,
                       "login_password": "{{ lookup('ansible.builtin.env', 'AKIG_BENCH_REDIS_PW') }}",
                       "pattern": MATCH + "*", "backup_dir": str(workdir / "backups"), "batch_size": args.batch_size}
        ansible_env = {k: v for k, v in env.items() if not k.startswith("ANSIBLE_")}
        ansible_env.update(ANSIBLE_CONFIG=str(home / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
                           ANSIBLE_HOME=str(home), ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_NOCOLOR="1",
                           AKIG_BENCH_REDIS_PW=password)
        hwm: dict[str, Any] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=sample_hwm, args=(hwm, stop), daemon=True)
        sampler.start()
        t0 = time.monotonic()
        run = subprocess.run([str(VENV_BIN / "ansible"), "localhost", "-m", "akig.runbooks.redis_keys", "-a",
                              json.dumps(module_args), "-e", "ansible_python_interpreter=%s" % PYTHON],
                             env=ansible_env, cwd=str(home), capture_output=True, text=True)
        seconds = time.monotonic() - t0
        stop.set()
        sampler.join()
        if run.returncode != 0 or password in run.stdout + run.stderr:
            raise SystemExit("FAILED: the ansible run failed (rc %d):\n%s" % (run.returncode, run.stdout[-2000:]))
        result = json.loads(run.stdout.split(" => ", 1)[1])
        rss = "%.1f MiB (module process, sampled)" % (hwm["kb"] / 1024) if hwm.get("kb") else "not sampled"
        report("ansible (module)", result["removed"], seconds, rss + "; wall time includes ansible's start")
        check_kept(client, args.keys, args.value_bytes)
        if result["removed"] != args.keys or backup_lines(result["backup_path"]) != args.keys:
            raise SystemExit("FAILED: removed %d, expected %d" % (result["removed"], args.keys))
        print("non-matching keys: all %d still there with their values; backups held one line per removed key"
              % args.keys)
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
