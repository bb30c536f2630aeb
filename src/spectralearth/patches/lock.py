"""Who may curate into a folder at once.

- A whole-archive curation (``spectralearth curate``: every scene, then the index) holds the
  folder exclusively: :func:`curation_lock` around its loop.
- Each scene's curation (:func:`~spectralearth.patches.curate.curate_scene`) holds the folder
  shared, so Dagster partitions of different scenes run in parallel, and its scene
  exclusively, so two runs never stage the same product at once.

Nothing waits: a second curation stops at once with :class:`CurationBusyError`, "another
curation holds <folder> (pid N)", and the first is unharmed. Locks are ``flock`` locks, so a
killed holder frees them; within one process they are re-entrant (a scene curated inside the
process's own archive run).
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FOLDER_LOCK = ".curation.lock"
SCENE_LOCKS = ".staging"

_held: dict[str, list] = {}  # lock path -> [mode, fd, count] held by this process
_guard = threading.Lock()


class CurationBusyError(OSError):
    """Another process is curating into the same folder (or the same scene). An OSError
    (EBUSY) whose ``filename`` is the lock under the folder: an error of the output folder,
    which stops a whole-archive run instead of failing product after product."""

    def __init__(self, message: str, lock: Path):
        super().__init__(errno.EBUSY, message)
        self.filename = str(lock)

    def __str__(self) -> str:
        return self.strerror


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return pid or "unknown"


def _scene_holders(root: Path) -> str:
    pids = sorted({_holder(p) for p in (root / SCENE_LOCKS).glob("*.lock")} - {"unknown"})
    return ", ".join(pids) or "unknown"


@contextmanager
def _flock(path: Path, exclusive: bool, busy: str, holders, remove: bool = False) -> Iterator[None]:
    """Hold ``path`` locked (shared or exclusive) without waiting; re-entrant per process.
    ``remove``: delete the lock file on release (an exclusive lock only)."""
    key = str(path.resolve())
    with _guard:
        mine = _held.get(key)
        if mine is not None and (mine[0] == "ex" or not exclusive):
            mine[2] += 1
            reentered = True
        elif mine is not None:
            raise CurationBusyError(f"{busy} (this process holds it shared)", path)
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[key][2] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CurationBusyError(f"{busy} (pid {holders()})", path) from None
        try:  # a holder that removed the file on release: lock the new file instead
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        if exclusive:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        with _guard:
            _held[key] = ["ex" if exclusive else "sh", fd, 1]
        try:
            yield
        finally:
            with _guard:
                _held.pop(key, None)
            if exclusive and remove:
                path.unlink(missing_ok=True)  # before the unlock: no one locks a dead file
            elif exclusive:
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)


@contextmanager
def curation_lock(root: str | os.PathLike) -> Iterator[None]:
    """Hold ``root`` for a whole-archive curation: no other curation (of any scene) may write
    into it meanwhile. Raises :class:`CurationBusyError` at once if one does."""
    root = Path(root)
    lock = root / FOLDER_LOCK

    def holders() -> str:  # a whole-archive run wrote its pid; scene runs hold scene locks
        pid = _holder(lock)
        return pid if pid != "unknown" else _scene_holders(root)

    with _flock(lock, True, f"another curation holds {root}", holders):
        yield


@contextmanager
def scene_lock(root: str | os.PathLike, scene: str) -> Iterator[None]:
    """Hold ``root`` shared and ``scene`` exclusively while one scene is curated."""
    root = Path(root)
    folder = root / FOLDER_LOCK
    with _flock(folder, False, f"another curation holds {root}", lambda: _holder(folder)):
        lock = root / SCENE_LOCKS / f"{scene}.lock"
        with _flock(
            lock,
            True,
            f"another curation holds {root} (scene {scene})",
            lambda: _holder(lock),
            remove=True,
        ):
            yield
