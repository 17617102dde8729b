"""Offline stand-in for ansible-test's downloaded get-pip bootstrap script.

ansible-test sanity bootstraps pip into each of its virtual environments by
downloading get-pip.py from a CDN these machines cannot reach.  scripts/setup.sh
copies this file to ~/.ansible/test/cache/get_pip_<version>.py, where ansible-test
looks first.  It does the same job with the standard library's ensurepip and then
lets pip install the requested packages from PyPI.
"""
from __future__ import annotations

import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def venv_pip_conf() -> None:
    """ansible-test runs pip with a filtered environment, so PIP_CERT and friends are lost:
    give its virtual environment the system CA bundle (which carries any local TLS proxy CA)."""
    bundle = next((b for b in (os.environ.get("PIP_CERT", ""), *CA_BUNDLES) if b and os.path.isfile(b)), None)
    if bundle and sys.prefix != sys.base_prefix:
        with open(os.path.join(sys.prefix, "pip.conf"), "w", encoding="utf-8") as fh:
            fh.write(f"[global]\ncert = {bundle}\n")


def main() -> None:
    venv_pip_conf()
    ensurepip.bootstrap(upgrade=True)
    os.environ.pop("PIP_CONFIG_FILE", None)  # ensurepip sets it to /dev/null; let pip read its config
    args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
    if args:
        subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)


if __name__ == "__main__":
    main()
