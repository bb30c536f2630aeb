"""The one atomic-write helper: every writer goes temp name -> fsync -> rename."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

# SQLite's unix VFS takes file names of under 512 bytes, its "-journal" / "-wal" files
# included: a database path longer than this fails with "unable to open database file"
SQLITE_MAX_PATH = 503


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


def flush_to_disk() -> None:
    """One flush of everything written so far (cheaper than an fsync per file)."""
    os.sync()


def _sync_file_range():
    """libc's sync_file_range (Linux), or None where it is not available."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of dirty pages, do not wait for it


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages to disk now, without waiting.

    Only a head start for a later :func:`flush_to_disk` (which stays the durability point):
    with gigabytes of RAM, the kernel would otherwise keep the pages dirty until that flush
    and the writer would wait for all of them at once. A no-op where sync_file_range is
    missing (non-Linux) or fails.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


class EarlySync:
    """Makes finished files durable on a background thread while the caller goes on writing.

    Each file handed over gets its kernel writeback started at once, then an fdatasync on
    this object's thread. Storage with a write cache (virtual disks) accepts data fast and
    makes it durable only on a cache flush, which then takes as long as writing it all: done
    file by file here, that time overlaps the caller's work instead of following it. Not a
    commit point by itself: the caller still calls :func:`wait` (re-raising a failed sync)
    and :func:`flush_to_disk` before it makes the files visible.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="early-sync")
        self._syncs: list[Future] = []

    def path(self, path: str | os.PathLike) -> None:
        self._submit(os.open(path, os.O_RDONLY), path)

    def fd(self, fd: int, path: str | os.PathLike) -> None:
        """A file still being written (``path`` names it in errors): what it holds so far
        (the caller's descriptor stays open)."""
        self._submit(os.dup(fd), path)

    def _submit(self, fd: int, path: str | os.PathLike) -> None:
        try:
            start_writeback(fd)
            self._syncs.append(self._pool.submit(_fdatasync_and_close, fd, path))
        except BaseException:
            os.close(fd)
            raise

    def wait(self) -> None:
        for f in self._syncs:
            f.result()
        self._syncs.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # every queued job closes its descriptor

    def __enter__(self) -> EarlySync:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fdatasync_and_close(fd: int, path: str | os.PathLike) -> None:
    try:
        getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync
    except OSError as exc:  # a bare EIO/ENOSPC names no file
        raise OSError(exc.errno, f"cannot make {path} durable: {exc.strerror}") from exc
    finally:
        os.close(fd)


def fsync_dirs(dirs: Iterable[str | os.PathLike]) -> None:
    """Make renames into these directories durable (fsync of each directory entry table)."""
    for d in sorted({str(d) for d in dirs}):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
