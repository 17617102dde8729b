# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Replace a file's content atomically, keeping its mode and owner (the env-file modules' write)."""

from __future__ import annotations

import os
import tempfile


def replace_atomically(path: str, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, flush it to disk, give it the mode and owner of
    ``path`` and rename it over ``path``, then flush the directory: readers see the old file or the new one,
    never half of it. Raises OSError with ``path`` unchanged and no temporary file left behind."""
    stat = os.stat(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.st_mode & 0o7777)
        os.chown(tmp, stat.st_uid, stat.st_gid)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
