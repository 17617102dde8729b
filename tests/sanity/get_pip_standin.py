"""Offline stand-in for ansible-test's downloaded get-pip bootstrap script.

ansible-test sanity bootstraps pip into each of its virtual environments by
downloading get-pip.py from a CDN these machines cannot reach.  scripts/setup.sh
copies this file to ~/.ansible/test/cache/get_pip_<version>.py, where ansible-test
looks first.  It does the same job with the standard library's ensurepip and then
lets pip install the requested packages from PyPI.
"""
from __future__ import annotations

import ensurepip
import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    ensurepip.bootstrap(upgrade=True)
    args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
    if args:
        subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)


if __name__ == "__main__":
    main()
