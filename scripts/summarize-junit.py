#!/usr/bin/env python3
"""Close a scripts/test.sh run: a table of the stages (result, duration, tests) and one line for the suite.

Usage: summarize-junit.py OUT_DIR [FAILED_STEP ...]

OUT_DIR holds what test.sh wrote: ``stages.tsv`` (name, result, seconds: one line a stage, in order),
the JUnit file of each pytest stage (``<stage>.xml``) and ``lab.log``, whose ``lab resets: N, Xs in all``
line (tests/lab/conftest.py) becomes a row of its own. A failed step without a JUnit failure of its own
(lint, sanity, a pytest run that crashed) counts as one failure in the closing line.
"""
from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

RESETS_RE = re.compile(r"lab resets: (?P<count>\d+), (?P<seconds>[\d.]+)s in all")


def junit_counts(path: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) of a JUnit file; errors count as failures."""
    passed = failed = skipped = 0
    for suite in ET.parse(path).getroot().iter("testsuite"):
        tests = int(suite.get("tests", 0))
        fail = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        passed += tests - fail - skip
        failed += fail
        skipped += skip
    return passed, failed, skipped


def describe(counts: tuple[int, int, int]) -> str:
    passed, failed, skipped = counts
    parts = ["%d passed" % passed]
    if failed:
        parts.append("%d failed" % failed)
    if skipped:
        parts.append("%d skipped" % skipped)
    return ", ".join(parts)


def read_stages(out: Path) -> list[tuple[str, str, str]]:
    path = out / "stages.tsv"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) == 3:
            rows.append((fields[0], fields[1], fields[2]))
    return rows


def lab_resets(out: Path) -> tuple[int, float] | None:
    path = out / "lab.log"
    if not path.is_file():
        return None
    found = RESETS_RE.findall(path.read_text(encoding="utf-8", errors="replace"))
    if not found:
        return None
    count, seconds = found[-1]
    return int(count), float(seconds)


def table(out: Path) -> list[str]:
    rows: list[tuple[str, str, str, str]] = []
    for name, result, seconds in read_stages(out):
        junit = out / ("%s.xml" % name)
        tests = describe(junit_counts(junit)) if junit.is_file() else ""
        rows.append((name, result, seconds + "s" if seconds != "-" else "-", tests))
        resets = lab_resets(out) if name == "lab" else None
        if resets:
            rows.append(("  lab resets", "", "%.1fs" % resets[1], "%d resets, in the lab stage's time" % resets[0]))
    if not rows:
        return []
    header = ("stage", "result", "time", "tests")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]

    def fmt(row: tuple[str, str, str, str]) -> str:
        return "[test] %s  %s  %s  %s" % (row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                                          row[3])

    return [fmt(header).rstrip()] + [fmt(row).rstrip() for row in rows]


def main(out_dir: str, *failed_steps: str) -> int:
    out = Path(out_dir)
    for line in table(out):
        print(line)
    passed = failed = skipped = 0
    failing_junit = set()
    for path in sorted(out.glob("*.xml")):
        counts = junit_counts(path)
        passed, failed, skipped = passed + counts[0], failed + counts[1], skipped + counts[2]
        if counts[1]:
            failing_junit.add(path.stem)
    if failed_steps:
        print("[test] failed steps: %s" % ", ".join(failed_steps))
    failed += len([step for step in failed_steps if step not in failing_junit])
    print("suite: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: summarize-junit.py OUT_DIR [FAILED_STEP ...]")
    sys.exit(main(*sys.argv[1:]))
