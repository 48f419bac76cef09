"""Replacing a file in one step: the rule every file wgslirpy writes follows.

:func:`write_atomic` writes to a temporary file in the target's directory (``mkstemp``:
mode 0600 until ``mode`` says otherwise), flushes it to disk unless told not to, then
renames it over the target (``os.replace``, atomic on POSIX) — or, ``exclusive``, links it
to the target name, which never replaces an existing file (``FileExistsError``). A reader
sees the old file or the new one, never half of one, and the temporary file never stays
behind. Used for the state directory's keys and configs (``state.py``), the remembered
peer endpoint (``io/endpoint_file.py``) and ``--stats-json`` (``io/stats.py``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["write_atomic"]


def write_atomic(
    path: str | os.PathLike[str],
    text: str,
    *,
    mode: int | None = None,
    fsync: bool = True,
    exclusive: bool = False,
    prefix: str = ".tmp.",
) -> None:
    """Make ``path`` hold ``text`` (UTF-8) in one step; OSError if it cannot."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # after os.replace it is gone already
