"""The location grid and the persistent location registry.

Rule: cells of ``patch_size x 30 m`` aligned per UTM zone, origin at the zone's false origin,
so a cell's ground footprint is fixed by (EPSG code, patch size, column, row) alone. A scene's window for
a cell starts at the pixel edge nearest the cell's corner (half-pixel phases, as in real L2A
grids, always snap the same way). A scene too small to hold one whole lattice cell (a 32 x 32
px tile cut from a larger scene, say) is tiled from its own corner instead, and its windows
are keyed by their exact corner coordinates (see :func:`scene_anchored_cells`): every key
still names exactly one ground footprint, and the choice depends on the scene alone. A revisit of the same
place on another date falls in the same cell and so gets the same location id, with no search
over earlier patches.

Keys map to 7-digit location ids through a persistent SQLite registry (WAL mode, one
IMMEDIATE transaction per scene, plus a file lock around id assignment and the folder moves
it implies, so parallel curation never gives one cell two ids). The ids come from an ordered
hash table over the keys (see :class:`Registry`): the same set of scenes gives the same ids
whatever order the scenes arrive in, and a location's id changes only in the rare case that
a later key wins its slot, when its folder is renamed in the same locked step.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import math
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spectralearth.io import SQLITE_MAX_PATH

PIXEL_SIZE_M = 30.0
MAX_LOCATION_ID = 9_999_999
MAX_SCENE_ID = 99_999


@dataclass(frozen=True)
class Cell:
    epsg: int
    col: int
    row: int
    row_off: int  # window origin in the scene's pixel grid
    col_off: int
    size: int = 0  # patch size in px (part of the key: one footprint per key)
    anchored: str = ""  # "" on the zone lattice; "x:y" (UL corner, m) when scene-anchored

    @property
    def key(self) -> str:
        if self.anchored:
            return f"{self.epsg}:{self.size}:at:{self.anchored}"
        return f"{self.epsg}:{self.size}:{self.col}:{self.row}"


def cells_in_scene(
    transform: tuple[float, ...], width: int, height: int, epsg: int, patch_size: int
) -> list[Cell]:
    """Grid cells that lie wholly inside a scene's pixel grid (north-up, 30 m)."""
    a, _, ulx, _, e, uly = transform[:6]
    if abs(a - PIXEL_SIZE_M) > 1e-6 or abs(e + PIXEL_SIZE_M) > 1e-6:
        raise ValueError(f"expected 30 m north-up pixels, got transform {transform[:6]}")
    size_m = patch_size * PIXEL_SIZE_M
    lrx, lry = ulx + width * a, uly + height * e
    cells = []
    for col in range(math.ceil(ulx / size_m), math.floor(lrx / size_m)):
        for row in range(math.ceil(lry / size_m), math.floor(uly / size_m)):
            x0, y1 = col * size_m, (row + 1) * size_m  # upper-left corner of the cell
            # floor(v + 0.5), not round(): real L2A grids sit half a pixel off the lattice
            # (corners at 15 m mod 30), and banker's rounding would shift windows of two
            # products of the same place in opposite directions
            col_off = math.floor((x0 - ulx) / a + 0.5)
            row_off = math.floor((uly - y1) / -e + 0.5)
            if 0 <= col_off <= width - patch_size and 0 <= row_off <= height - patch_size:
                cells.append(Cell(epsg, col, row, row_off, col_off, patch_size))
    if not cells:
        cells = scene_anchored_cells(transform, width, height, epsg, patch_size)
    return sorted(cells, key=lambda c: (c.row_off, c.col_off))


def scene_anchored_cells(
    transform: tuple[float, ...], width: int, height: int, epsg: int, patch_size: int
) -> list[Cell]:
    """Fallback for scenes too small to hold one lattice cell (e.g. 32 x 32 px tiles cut from
    a scene): windows tile the scene from its own corner, keyed by their exact UL corner, so a
    key still means one ground footprint (shared by any scene with a window at that corner)."""
    _, _, ulx, _, _, uly = transform[:6]
    cells = []
    for row_off in range(0, height - patch_size + 1, patch_size):
        for col_off in range(0, width - patch_size + 1, patch_size):
            x = ulx + col_off * PIXEL_SIZE_M
            y = uly - row_off * PIXEL_SIZE_M
            cells.append(
                Cell(epsg, -1, -1, row_off, col_off, patch_size, anchored=f"{x:.1f}:{y:.1f}")
            )
    return cells


LOCATION_ID_RULE = "ordered-hash-v1"


def _home_slot(key: str, slots: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % slots


@dataclass(frozen=True)
class Move:
    """An existing location whose id changed: its folder moves from ``old`` to ``new``."""

    key: str
    old: int
    new: int


class RegistryError(RuntimeError):
    pass


class Registry:
    """Persistent key -> id maps for locations (7 digits) and scenes (5 digits).

    Location ids come from an *ordered hash table* (Amble & Knuth, 1974) over the id space:
    a key's home slot is a hash of the key, collisions probe linearly, and where two keys
    compete for a slot the smaller key wins. Such a table is the same for a set of keys
    whatever order they were inserted in, so ids do not depend on the order scenes arrive
    in. The price: a new key that sorts before an earlier one in the same probe run takes
    its slot and pushes it on by one (a :class:`Move`; rare while the table is sparse, e.g.
    about 2% of new keys for 400k locations in 10M ids). Callers apply moves with
    :meth:`apply_moves` while holding :meth:`lock`.

    Scene ids are handed out in order of first arrival (5 digits, the release layout's).
    """

    def __init__(self, path: str | Path, location_slots: int | None = None):
        self.path = Path(path)
        self.location_slots = int(location_slots or MAX_LOCATION_ID)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        try:
            with con:
                con.execute("BEGIN IMMEDIATE")
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
                if "locations" in tables and "meta" not in tables:
                    if con.execute("SELECT COUNT(*) FROM locations").fetchone()[0]:
                        raise RegistryError(
                            f"{self.path} holds location ids of an older rule (arrival order);"
                            " delete its patches folder (make clean-data) and curate again"
                        )
                    con.execute("DROP TABLE locations")
                con.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
                con.execute(
                    "CREATE TABLE IF NOT EXISTS locations (key TEXT PRIMARY KEY, id INTEGER UNIQUE)"
                )
                con.execute(
                    "CREATE TABLE IF NOT EXISTS scenes (key TEXT PRIMARY KEY, id INTEGER UNIQUE)"
                )
                con.execute(
                    "CREATE TABLE IF NOT EXISTS moves"
                    " (key TEXT PRIMARY KEY, old INTEGER, new INTEGER, moved INTEGER DEFAULT 0)"
                )
                rule = f"{LOCATION_ID_RULE}:{self.location_slots}"
                found = con.execute("SELECT value FROM meta WHERE name='rule'").fetchone()
                if found is None:
                    con.execute("INSERT INTO meta VALUES ('rule', ?)", (rule,))
                elif found[0] != rule:
                    raise RegistryError(
                        f"{self.path} was built with location-id rule {found[0]}, not {rule}"
                    )
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
        except sqlite3.OperationalError as exc:
            # an error of the output folder (curation stops instead of rejecting each product)
            length = len(str(Path(self.path).resolve()))
            if length > SQLITE_MAX_PATH:
                raise OSError(
                    errno.ENAMETOOLONG,
                    f"the location registry's path is {length} characters, longer than SQLite "
                    f"accepts ({SQLITE_MAX_PATH}): use a shorter curated folder path",
                    str(self.path),
                ) from None
            raise OSError(
                errno.EIO, f"cannot open the location registry ({exc})", str(self.path)
            ) from None
        return con

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes: id assignment plus the file moves it implies."""
        with open(self.path.with_suffix(".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- locations -----------------------------------------------------------------------

    def assign_locations(self, keys: Iterable[str]) -> tuple[dict[str, int], list[Move]]:
        """Ids for ``keys`` (new ones inserted) and the moves of earlier keys this causes.

        The moves are recorded as pending in the same transaction; call :meth:`apply_moves`
        before anything reads or writes location folders (both under :meth:`lock`).
        """
        keys = sorted(set(keys))
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            displaced: dict[str, int] = {}  # earlier key -> its id before this batch
            new_keys: set[str] = set()
            count = con.execute("SELECT COUNT(*) FROM locations").fetchone()[0]
            for key in keys:
                if con.execute("SELECT 1 FROM locations WHERE key=?", (key,)).fetchone():
                    continue
                if count >= self.location_slots:
                    raise OverflowError(f"location registry is full ({self.location_slots} ids)")
                count += 1
                new_keys.add(key)
                current, slot = key, _home_slot(key, self.location_slots)
                while True:
                    row = con.execute("SELECT key FROM locations WHERE id=?", (slot + 1,))
                    occupant = row.fetchone()
                    if occupant is None or current < occupant[0]:  # the smaller key wins
                        if occupant is not None:
                            if occupant[0] not in new_keys:
                                displaced.setdefault(occupant[0], slot + 1)
                            con.execute("DELETE FROM locations WHERE id=?", (slot + 1,))
                        con.execute(
                            "INSERT INTO locations(key, id) VALUES (?, ?)", (current, slot + 1)
                        )
                        if occupant is None:
                            break
                        current = occupant[0]  # pushed on along its own probe run
                    slot = (slot + 1) % self.location_slots
            now = self._lookup(con, displaced)
            moves = [Move(k, old, now[k]) for k, old in sorted(displaced.items()) if now[k] != old]
            for m in moves:
                con.execute(
                    "INSERT INTO moves(key, old, new) VALUES (?, ?, ?) ON CONFLICT(key)"
                    " DO UPDATE SET new=excluded.new",
                    (m.key, m.old, m.new),
                )
            ids = self._lookup(con, keys)
            con.execute("COMMIT")
            return ids, moves
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    @staticmethod
    def _lookup(con, keys: Iterable[str]) -> dict[str, int]:
        out = {}
        for key in keys:
            found = con.execute("SELECT id FROM locations WHERE key=?", (key,)).fetchone()
            if found:
                out[key] = found[0]
        return out

    def location_ids(self, keys: Iterable[str]) -> dict[str, int]:
        """Ids of already registered keys (unknown keys are left out)."""
        con = self._connect()
        try:
            return self._lookup(con, list(keys))
        finally:
            con.close()

    def pending_moves(self) -> list[Move]:
        con = self._connect()
        try:
            rows = con.execute("SELECT key, old, new FROM moves ORDER BY key").fetchall()
        finally:
            con.close()
        return [Move(*r) for r in rows]

    def apply_moves(self, folder_of: Callable[[int], Path]) -> list[Move]:
        """Rename each moved location's folder (``folder_of(id)``), crash-safely, and clear
        the pending moves. Two phases, because one key's new folder may be another's old
        one: every moving folder goes to a parking name first, then to its new name; the
        phase reached is recorded, so a rerun after a crash finishes the job."""
        moves = self.pending_moves()
        if not moves:
            return []
        con = self._connect()
        try:
            phase = {r[0]: r[1] for r in con.execute("SELECT key, moved FROM moves")}
            parked = {
                m.key: folder_of(m.old).parent / f".moving-{_home_slot(m.key, 10**12)}"
                for m in moves
            }
            for m in moves:
                if phase[m.key] == 0 and folder_of(m.old).exists() and not parked[m.key].exists():
                    os.replace(folder_of(m.old), parked[m.key])
            with con:
                con.execute("UPDATE moves SET moved=1")
            for m in moves:
                if parked[m.key].exists():
                    folder_of(m.new).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(parked[m.key], folder_of(m.new))
            with con:
                con.execute("DELETE FROM moves")
        finally:
            con.close()
        return moves

    # -- scenes --------------------------------------------------------------------------

    def register_scenes(self, scene_keys: Iterable[str]) -> None:
        """Give the keys not yet registered the next scene ids in sorted key order (one
        transaction). Curation registers the whole archive's keys (its catalogue) before its
        own scene, so the ids of one archive do not depend on the order its scenes are
        curated in (Dagster partitions in any order, or the CLI's loop). Scenes that arrive
        later get the next ids, again in sorted order per registration."""
        keys = sorted(set(scene_keys))
        if not keys:
            return
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")  # one writer at a time: no id is handed out twice
            known = {k for (k,) in con.execute("SELECT key FROM scenes")}
            next_id = con.execute("SELECT COALESCE(MAX(id), 0) FROM scenes").fetchone()[0] + 1
            new = [k for k in keys if k not in known]
            if next_id + len(new) - 1 > MAX_SCENE_ID:
                raise OverflowError(f"scene registry is full ({MAX_SCENE_ID} ids)")
            con.executemany(
                "INSERT INTO scenes(key, id) VALUES (?, ?)",
                [(k, next_id + i) for i, k in enumerate(new)],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def scene_id(self, scene_key: str) -> int:
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")  # one writer at a time: no id is handed out twice
            found = con.execute("SELECT id FROM scenes WHERE key=?", (scene_key,)).fetchone()
            if found:
                con.execute("COMMIT")
                return found[0]
            next_id = con.execute("SELECT COALESCE(MAX(id), 0) FROM scenes").fetchone()[0] + 1
            if next_id > MAX_SCENE_ID:
                raise OverflowError(f"scene registry is full ({MAX_SCENE_ID} ids)")
            con.execute("INSERT INTO scenes(key, id) VALUES (?, ?)", (scene_key, next_id))
            con.execute("COMMIT")
            return next_id
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()
