"""The one atomic-write helper: every writer goes temp name -> fsync -> rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it into place.

    Readers never see a partial file: on any error the temporary file is removed and the
    old ``target`` (if any) is left untouched. ``fsync=False`` skips the per-file flush for
    writers that make many files and call :func:`flush_to_disk` once before their commit
    point (the rename is atomic either way; fsync only matters for power loss).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give outputs the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        if fsync:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def flush_to_disk() -> None:
    """One flush of everything written so far (cheaper than an fsync per file)."""
    os.sync()


def fsync_dirs(dirs: Iterable[str | os.PathLike]) -> None:
    """Make renames into these directories durable (fsync of each directory entry table)."""
    for d in sorted({str(d) for d in dirs}):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
