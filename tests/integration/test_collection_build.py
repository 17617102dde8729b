"""`ansible-galaxy collection build` makes a tarball that installs, and its plugins resolve by FQCN."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_build_install_and_resolve(tmp_path: Path) -> None:
    env = {**os.environ, "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"), "ANSIBLE_HOME": str(tmp_path / "home")}
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(REPO), "--output-path", str(tmp_path)],
                           capture_output=True, text=True, env=env, check=False, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next(tmp_path.glob("akig-runbooks-*.tar.gz"))
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "plugins/modules/pg_promote.py" in names and "roles/pg_failover/tasks/main.yml" in names
    assert not any(n.startswith(("lab/", ".venv/", "tests/output/")) for n in names)
    dest = tmp_path / "collections"
    install = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(dest), str(tarball)],
                             capture_output=True, text=True, env=env, check=False, timeout=120)
    assert install.returncode == 0, install.stdout + install.stderr
    env["ANSIBLE_COLLECTIONS_PATH"] = str(dest)
    for kind, name in [("module", "akig.runbooks.pg_promote"), ("filter", "akig.runbooks.sla_status"),
                       ("callback", "akig.runbooks.timeline")]:
        doc = subprocess.run([str(BIN / "ansible-doc"), "-t", kind, name], capture_output=True, text=True, env=env,
                             check=False, timeout=120)
        assert doc.returncode == 0 and name.rsplit(".", maxsplit=1)[-1] in doc.stdout, doc.stderr
