#!/usr/bin/env python3
"""Unpack the collections akig.runbooks depends on from the `ansible` wheel on PyPI.

Galaxy is not reachable from AKIG's build machines, but PyPI is, and the `ansible`
community package ships every collection it includes inside its wheel. Unpacking just
the ones we need is reproducible (pinned version) and takes a few seconds.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

COLLECTIONS = ("community/postgresql", "community/general")


def installed(dest: Path, stamp_value: str) -> bool:
    stamp = dest / ".akig-ansible-wheel"
    return stamp.is_file() and stamp.read_text().strip() == stamp_value and all(
        (dest / "ansible_collections" / c / "MANIFEST.json").is_file() for c in COLLECTIONS
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ansible-version", required=True)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "akig-runbooks" / "wheels")
    args = parser.parse_args(argv)

    if installed(args.dest, args.ansible_version):
        return 0
    args.cache.mkdir(parents=True, exist_ok=True)
    wheel = args.cache / f"ansible-{args.ansible_version}-py3-none-any.whl"
    if not wheel.is_file():
        print(f"[setup] downloading ansible=={args.ansible_version} wheel from PyPI (collections only are kept)")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
             "-d", str(args.cache), f"ansible=={args.ansible_version}"],
            check=True,
        )
    if not wheel.is_file():
        print(f"[setup] ERROR: {wheel} was not downloaded; check PyPI access", file=sys.stderr)
        return 1
    prefixes = tuple(f"ansible_collections/{c}/" for c in COLLECTIONS)
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.startswith(prefixes)]
        zf.extractall(args.dest, members)
    for c in COLLECTIONS:
        manifest = json.loads((args.dest / "ansible_collections" / c / "MANIFEST.json").read_text())
        print(f"[setup] {c.replace('/', '.')} {manifest['collection_info']['version']}")
    (args.dest / ".akig-ansible-wheel").write_text(args.ansible_version + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
