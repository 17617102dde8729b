#!/usr/bin/env python3
"""Print one closing line for the whole suite from the JUnit files and the failed steps."""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(out_dir: str, *failed_steps: str) -> int:
    passed = failed = skipped = 0
    for path in sorted(Path(out_dir).glob("*.xml")):
        for suite in ET.parse(path).getroot().iter("testsuite"):
            tests, fail = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skip = int(suite.get("skipped", 0))
            passed += tests - fail - skip
            failed += fail
            skipped += skip
    if failed_steps:
        print(f"[test] failed steps: {', '.join(failed_steps)}")
    failed += len([s for s in failed_steps if s not in ("unit", "integration", "lab")])
    print(f"suite: {passed} passed, {failed} failed, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
