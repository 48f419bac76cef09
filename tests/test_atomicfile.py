"""atomicfile.py: a file is replaced in one step and no temporary file stays behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from wgslirpy.atomicfile import write_atomic


def test_replaces_with_mode_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, "one\n")
    assert target.read_text() == "one\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomic(target, "two\n", mode=0o644, fsync=False)
    assert target.read_text() == "two\n" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["f"]


def test_exclusive_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "key"
    write_atomic(target, "first\n", exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomic(target, "second\n", exclusive=True)
    assert target.read_text() == "first\n" and os.listdir(tmp_path) == ["key"]


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()  # os.replace of a file over a directory fails
    with pytest.raises(OSError):
        write_atomic(target, "x")
    assert target.is_dir() and os.listdir(tmp_path) == ["d"]
