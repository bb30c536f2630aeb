"""Reading the training store: the index, checked against the files, and each patch's pixels.

:func:`open_store` is the one door every reader of curated or released patches goes through
(the training dataset, band statistics, the downstream builders). Before it returns it has
refused, naming the scene or file:

- a curated folder whose index is not the one built from its current scene fragments, or a
  scene whose curation stopped half-way (:func:`~spectralearth.patches.store.check_fragments`);
- an index whose rows do not match its recorded version;
- a missing file, or one whose size differs from the index (truncated, rewritten);
- a file whose pixels' CRC-32 differs from the index (one patch overwritten in place).

Checksums cost a read of the data, so they are checked once per file and cached: a file
whose identity (device, inode, size, mtime) was already seen with the index's checksum is
trusted from a ``stat``. Curation records the files it writes, so a freshly curated folder
opens with one ``stat`` per patch; a copied folder (new inodes) is checksummed once. The cache
lives outside the data folder (``$SPECTRALEARTH_CACHE_DIR``, else
``$XDG_CACHE_HOME/spectralearth``, else ``~/.cache/spectralearth``): readers write nothing
into the folders they read, and a read-only released tree works. Entries whose mtime is
within :data:`RACY_SECONDS` of when they were recorded are not kept (a write in the same
timestamp tick would not change the mtime), as git does for its index.

Pixels: a patch laid out as one contiguous band-sequential block (what curation writes) is
copied straight into the caller's buffer from the file's page cache. In a store of up to
``MAX_MAPS`` patches each block is memory-mapped once and the map kept, so a patch read again
costs a memory copy, as a shard read did; a larger store (more files than the kernel would
map: half a million at the paper's scale) is read with one ``pread`` per block, which beats a
new map per read (benchmarks/RESULTS.md). Any other GeoTIFF (compressed, tiled,
pixel-interleaved, big-endian) is read through rasterio. A file truncated *while* mapped
would end the reader with SIGBUS, as a shard did: sizes are checked when each map is made.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spectralearth.patches.store import (
    INDEX_FILE,
    STORE_COLUMNS,
    StaleIndexError,
    check_fragments,
    checked_version,
    index_attrs,
    pixels_crc32,
)

CACHE_FILE = "verified-patches.sqlite"
# Stores of up to this many patches keep every file's pixel block memory-mapped (well under
# the kernel's default 65,530 maps); larger ones read each block with one pread
MAX_MAPS = 16384
RACY_SECONDS = 0.5
# Columns a reader needs (others, e.g. band means and footprints, stay on disk)
READ_COLUMNS = (
    "patch_id",
    "location_id",
    "scene_id",
    "datetime",
    "split",
    "path",
    "product",
    "n_bands",
    "patch_size",
    *STORE_COLUMNS,
)


class StoreIntegrityError(RuntimeError):
    """Patch files do not match the index: names the files, their scenes and the fix."""


@dataclass(frozen=True)
class StoreCheck:
    """What opening a store checked: ``trusted`` files from the cache, ``checksummed`` now."""

    patches: int
    trusted: int
    checksummed: int
    seconds: float

    def metadata(self) -> dict:
        return {
            "patches": self.patches,
            "trusted": self.trusted,
            "checksummed": self.checksummed,
            "seconds": round(self.seconds, 3),
        }


def cache_path() -> Path:
    base = os.environ.get("SPECTRALEARTH_CACHE_DIR")
    if base:
        return Path(base) / CACHE_FILE
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "spectralearth" / CACHE_FILE


def fingerprint(st: os.stat_result) -> tuple[int, int, int, int]:
    return (int(st.st_dev), int(st.st_ino), int(st.st_size), int(st.st_mtime_ns))


class VerifiedFiles:
    """The checksum cache: file identity (device, inode, size, mtime) -> the pixels' CRC-32
    seen for it. Entries are facts about files, whichever folder they are in; a missing or
    unwritable cache only costs checksums."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else cache_path()

    def _connect(self) -> sqlite3.Connection | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(
                "CREATE TABLE IF NOT EXISTS verified (dev INTEGER, ino INTEGER, size INTEGER,"
                " mtime_ns INTEGER, crc INTEGER, PRIMARY KEY (dev, ino))"
            )
            return con
        except (OSError, sqlite3.Error):
            return None

    def lookup(self, prints: Iterable[tuple[int, int, int, int]]) -> dict[tuple, int]:
        prints = list(prints)
        con = self._connect()
        if con is None or not prints:
            return {}
        try:
            con.execute("CREATE TEMP TABLE want (dev INTEGER, ino INTEGER)")
            con.executemany("INSERT INTO want VALUES (?, ?)", [(p[0], p[1]) for p in prints])
            rows = con.execute(
                "SELECT v.dev, v.ino, v.size, v.mtime_ns, v.crc FROM verified v"
                " JOIN want w ON v.dev = w.dev AND v.ino = w.ino"
            ).fetchall()
        except sqlite3.Error:
            return {}
        finally:
            con.close()
        return {tuple(r[:4]): int(r[4]) for r in rows}

    def record(self, entries: Iterable[tuple[tuple[int, int, int, int], int]]) -> None:
        """Remember ``(fingerprint, crc)`` pairs, except racy ones (mtime too recent)."""
        now = time.time_ns()
        keep = [
            (*fp, int(crc)) for fp, crc in entries if now - fp[3] > RACY_SECONDS * 1_000_000_000
        ]
        if not keep:
            return
        con = self._connect()
        if con is None:
            return
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?)", keep)
        except sqlite3.Error:
            pass  # a cache that cannot be written costs checksums, never a wrong answer
        finally:
            con.close()

    def record_files(self, files: Iterable[tuple[Path, int]]) -> None:
        """Remember files just written with their known CRC-32 (curation, after its commit)."""
        entries = []
        for path, crc in files:
            try:
                entries.append((fingerprint(os.stat(path)), crc))
            except OSError:
                continue
        self.record(entries)


class PatchStore:
    """A verified view of a store's index (train/val/test rows) with a reader of its pixels.

    ``index``: one row per patch (``READ_COLUMNS`` that the index has); ``version``: the
    index version (:func:`~spectralearth.patches.store.index_version`); every patch shares
    ``shape`` = (bands, P, P), int16.
    """

    def __init__(self, root: Path, index: pd.DataFrame, version: str, check: StoreCheck):
        self.root = Path(root)
        self.index = index.reset_index(drop=True)
        self.version = version
        self.check = check
        self._paths = [str(self.root / p) for p in self.index["path"]]
        self._offsets = self.index["data_offset"].to_numpy(np.int64)
        bands = _one_value(self.index, "n_bands", self.root)
        size = _one_value(self.index, "patch_size", self.root)
        self.shape = (bands, size, size)
        self.nbytes = bands * size * size * 2
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self._maps_lock = threading.Lock()
        self.mapped = len(self.index) <= MAX_MAPS

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"], state["_maps_lock"] = OrderedDict(), None  # reopened per process
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._maps_lock = threading.Lock()

    def _block(self, row: int) -> np.ndarray:
        """The memory map of patch ``row``'s pixel block, kept for the next read."""
        with self._maps_lock:
            block = self._maps.get(row)
            if block is not None:
                self._maps.move_to_end(row)
                return block
        path, offset = self._paths[row], int(self._offsets[row])
        size = os.stat(path).st_size
        if size < offset + self.nbytes:  # a map past the end would kill the reader (SIGBUS)
            raise StoreIntegrityError(
                f"{path}: {size} bytes, its pixel block ends at {offset + self.nbytes}: the "
                "file is truncated; curate its scene again or restore it"
            )
        block = np.memmap(path, dtype="<i2", mode="r", offset=offset, shape=self.shape)
        with self._maps_lock:
            self._maps[row] = block
            while len(self._maps) > MAX_MAPS:
                self._maps.popitem(last=False)  # unmapped once no reader holds it
        return block

    def read(self, row: int) -> np.ndarray:
        """Patch ``row`` (position in :attr:`index`) as int16 [bands, P, P]."""
        out = np.empty(self.shape, dtype=np.int16)
        self.read_into(row, out)
        return out

    def read_into(self, row: int, out: np.ndarray) -> None:
        """Patch ``row`` into ``out`` (C-contiguous int16 [bands, P, P]) with one copy."""
        if self._offsets[row] >= 0 and self.mapped:
            out[...] = self._block(row)
        elif self._offsets[row] >= 0:
            read_block(self._paths[row], int(self._offsets[row]), out)
        else:
            out[...] = _rasterio_pixels(self._paths[row], self.shape)

    def rows_of(self, split: str) -> pd.DataFrame:
        return self.index[self.index["split"] == split]


def open_store(root: str | os.PathLike, *, workers: int = 4) -> PatchStore:
    """Open ``<root>/index.parquet`` and check it against the files (see the module doc);
    raise :class:`StoreIntegrityError` or
    :class:`~spectralearth.patches.store.StaleIndexError` naming what does not match."""
    root = Path(root)
    path = root / INDEX_FILE
    if not path.is_file():
        legacy = root / "shards" / "manifest.parquet"
        raise FileNotFoundError(
            f"no patch index {path} (nor a legacy shard manifest {legacy}): curate the folder "
            "(`spectralearth curate`) or index a released tree (`spectralearth index-release "
            "ROOT`)"
        )
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    index = pd.read_parquet(path, columns=[c for c in READ_COLUMNS if c in names])
    version = checked_version(path, index)
    if index_attrs(index).get("fragments") is not None:
        check_fragments(root, index)
    check = verify_files(root, index, workers=workers)
    return PatchStore(root, index, version, check)


def check_patches(root: str | os.PathLike) -> StoreCheck | None:
    """:func:`open_store`'s checks for a reader that reads the files itself (the downstream
    builders): raises as it does where ``<root>/index.parquet`` is in the store's format;
    None, checking nothing, for an index written without it (a hand-made table)."""
    root = Path(root)
    path = root / INDEX_FILE
    if not path.is_file() or not index_attrs(pd.read_parquet(path, columns=[])):
        return None
    return open_store(root).check


def verify_files(
    root: Path, index: pd.DataFrame, *, workers: int = 4, cache: VerifiedFiles | None = None
) -> StoreCheck:
    """Every index row's file exists with the recorded size and pixels (module doc)."""
    start = time.perf_counter()
    cache = cache or VerifiedFiles()
    paths = [root / p for p in index["path"]]
    sizes = index["file_size"].to_numpy(np.int64)
    crcs = index["pixels_crc32"].to_numpy(np.int64)
    offsets = index["data_offset"].to_numpy(np.int64)
    problems: list[str] = []
    prints: list[tuple | None] = []
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            problems.append(f"{p}: missing{_scene_of(index, i)}")
            prints.append(None)
            continue
        if st.st_size != sizes[i]:
            problems.append(
                f"{p}: {st.st_size} bytes, the index recorded {sizes[i]} (truncated or "
                f"rewritten){_scene_of(index, i)}"
            )
        prints.append(fingerprint(st))
    _raise(root, index, problems)
    known = cache.lookup(fp for fp in prints if fp is not None)
    suspects = [i for i, fp in enumerate(prints) if known.get(fp) != crcs[i]]

    def checksum(i: int) -> int:
        shape = (int(index["n_bands"].iat[i]), int(index["patch_size"].iat[i]))
        return file_crc32(str(paths[i]), int(offsets[i]), (shape[0], shape[1], shape[1]))

    verified = []
    with ThreadPoolExecutor(max(1, workers)) as pool:  # reads and zlib release the GIL
        for i, crc in zip(suspects, pool.map(checksum, suspects), strict=True):
            if crc != crcs[i]:
                problems.append(
                    f"{paths[i]}: its pixels changed since they were indexed (CRC-32 "
                    f"{crc:08x}, the index recorded {int(crcs[i]):08x}){_scene_of(index, i)}"
                )
            else:
                verified.append((prints[i], crc))
    _raise(root, index, problems)
    cache.record(verified)
    return StoreCheck(
        len(index), len(index) - len(suspects), len(suspects), time.perf_counter() - start
    )


def _scene_of(index: pd.DataFrame, i: int) -> str:
    if "product" in index.columns and isinstance(index["product"].iat[i], str):
        return f" (scene {index['product'].iat[i]}, patch {index['patch_id'].iat[i]})"
    return f" (patch {index['patch_id'].iat[i]})"


def _raise(root: Path, index: pd.DataFrame, problems: list[str]) -> None:
    if not problems:
        return
    curated = index_attrs(index).get("fragments") is not None
    fix = (
        "curate those scenes again (`spectralearth curate`), then rebuild the index"
        if curated
        else "restore those files (download them again) and rerun "
        "`spectralearth index-release ROOT` (with --skip-unreadable to leave them out)"
    )
    shown = "\n  ".join(problems[:10])
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    raise StoreIntegrityError(
        f"{root / INDEX_FILE}: {len(problems)} patch file(s) do not match the index:\n  "
        f"{shown}{more}\n{fix}"
    )


def _one_value(index: pd.DataFrame, column: str, root: Path) -> int:
    if not len(index):
        return 0
    if column not in index.columns:
        raise StaleIndexError(f"{root / INDEX_FILE} has no {column!r} column")
    values = index[column].unique()
    if len(values) != 1:
        raise ValueError(
            f"{root / INDEX_FILE}: patches of several {column} values {sorted(values)[:5]}: "
            "one store holds one patch shape"
        )
    return int(values[0])


def read_block(path: str, offset: int, out: np.ndarray) -> None:
    """``out.nbytes`` bytes of ``path`` at ``offset`` straight into ``out`` (one pread; a
    short file raises naming it)."""
    buf = memoryview(out).cast("B")
    got = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while got < len(buf):
            n = os.preadv(fd, [buf[got:]], offset + got)
            if n == 0:
                break
            got += n
    finally:
        os.close(fd)
    if got != len(buf):
        raise StoreIntegrityError(
            f"{path}: {got} of {len(buf)} pixel bytes at offset {offset}: the file is "
            "truncated; curate its scene again or restore it"
        )


def _rasterio_pixels(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        if (src.count, src.height, src.width) != shape or src.dtypes[0] != "int16":
            raise StoreIntegrityError(
                f"{path}: {src.count} x {src.height} x {src.width} {src.dtypes[0]}, the "
                f"index expects {shape[0]} x {shape[1]} x {shape[2]} int16"
            )
        return src.read()


def file_crc32(path: str, offset: int, shape: tuple[int, int, int]) -> int:
    """CRC-32 of a patch file's pixels (:func:`~spectralearth.patches.store.pixels_crc32`)."""
    out = np.empty(shape, dtype=np.int16)
    if offset >= 0:
        read_block(path, offset, out)
    else:
        out[...] = _rasterio_pixels(path, shape)
    return pixels_crc32(out)
