#!/usr/bin/env python3
"""Benchmark the akig.runbooks.preload callback: a playbook whose tasks use the collection's filters and action
plugins, with and without the callback, run alternately.

    .venv/bin/python benchmarks/preload.py [--tasks 20] [--rounds 5]

The playbook runs on localhost (``-c local``, no lab needed): --tasks tasks, each a ``set_fact`` that calls two of the
collection's filters (``size_bytes``, ``duration_seconds``) and an ``akig.runbooks.http_health`` call in check mode
(its action plugin, no request sent). Each round runs it once without the callback
(``ANSIBLE_CALLBACKS_ENABLED=ansible.builtin.default``) and once with it (``ansible.builtin.default,
akig.runbooks.preload``), alternating so a machine whose speed drifts affects both alike. It prints each run's wall
time, the median of each, the time per task saved and the callback's own load time (from its -vvv line).
A benchmark, not a test: it prints figures and exits 1 only when a playbook fails.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def playbook(tasks: int) -> str:
    lines = ["- name: Tasks that use the collection's filters and an action plugin", "  hosts: localhost",
             "  gather_facts: false", "  tasks:"]
    for i in range(tasks):
        if i % 2:
            lines += ["    - name: Ask a health endpoint (check mode, nothing sent) %d" % i,
                      "      akig.runbooks.http_health:",
                      "        urls: [http://127.0.0.1:9/api/health]",
                      "      check_mode: true"]
        else:
            lines += ["    - name: Use two filters of the collection %d" % i,
                      "      ansible.builtin.set_fact:",
                      "        budget: \"{{ '16MB' | akig.runbooks.size_bytes }} {{ '30s' | akig.runbooks.duration_seconds }}\""]
    return "\n".join(lines) + "\n"


def run(path: Path, callbacks: str, tmp: Path) -> tuple[float, str]:
    env = dict(os.environ, PATH="%s:%s" % (VENV_BIN, os.environ.get("PATH", "")),
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_CALLBACKS_ENABLED=callbacks,
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_LOCAL_TEMP=str(tmp / "tmp"))
    started = time.perf_counter()
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-vvv", "-i", "localhost,", "-c", "local", str(path),
                           "-e", "ansible_python_interpreter=%s" % sys.executable],
                          capture_output=True, text=True, env=env, cwd=tmp, timeout=600, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit("the playbook failed (%s):\n%s" % (callbacks, (proc.stdout + proc.stderr)[-3000:]))
    said = next((line for line in proc.stdout.splitlines() if line.startswith("preload:")), "")
    return seconds, said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="akig-preload-") as tmpdir:
        tmp = Path(tmpdir)
        path = tmp / "site.yml"
        path.write_text(playbook(args.tasks))
        without, with_cb, load = [], [], []
        for i in range(1, args.rounds + 1):
            a, _ = run(path, "ansible.builtin.default", tmp)
            b, said = run(path, "ansible.builtin.default,akig.runbooks.preload", tmp)
            without.append(a)
            with_cb.append(b)
            match = re.search(r"in ([0-9.]+) s", said)
            if match:
                load.append(float(match.group(1)))
            print("round %d: without %.2f s, with preload %.2f s  (%s)" % (i, a, b, said or "no preload line"),
                  flush=True)
        med_a, med_b = statistics.median(without), statistics.median(with_cb)
        print("%d tasks, %d rounds: median without %.2f s, with preload %.2f s; %.3f s saved per task; the callback's "
              "own load %.3f s (median), once per playbook" % (
                  args.tasks, args.rounds, med_a, med_b, (med_a - med_b) / args.tasks,
                  statistics.median(load) if load else float("nan")))


if __name__ == "__main__":
    main()
