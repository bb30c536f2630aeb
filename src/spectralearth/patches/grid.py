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

Ids are 7-digit integers handed out by a SQLite registry (WAL mode, one IMMEDIATE transaction
per scene so parallel curation never gives one cell two ids). Ids are given in order of first
arrival; `spectralearth curate` processes products in sorted order, so a full run is
reproducible. Arrival-order independence across incremental runs is not guaranteed yet.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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


class Registry:
    """Persistent key -> id maps for locations (7 digits) and scenes (5 digits)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        with con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS locations (key TEXT PRIMARY KEY, id INTEGER UNIQUE)"
            )
            con.execute(
                "CREATE TABLE IF NOT EXISTS scenes (key TEXT PRIMARY KEY, id INTEGER UNIQUE)"
            )
        con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def _ids(self, table: str, keys: Iterable[str], limit: int) -> dict[str, int]:
        keys = list(dict.fromkeys(keys))
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")  # one writer at a time: no id is handed out twice
            out = {}
            next_id = (con.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]) + 1
            for key in keys:
                found = con.execute(f"SELECT id FROM {table} WHERE key=?", (key,)).fetchone()
                if found:
                    out[key] = found[0]
                    continue
                if next_id > limit:
                    raise OverflowError(f"{table} registry is full ({limit} ids)")
                con.execute(f"INSERT INTO {table}(key, id) VALUES (?, ?)", (key, next_id))
                out[key] = next_id
                next_id += 1
            con.execute("COMMIT")
            return out
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def location_ids(self, keys: Iterable[str]) -> dict[str, int]:
        return self._ids("locations", keys, MAX_LOCATION_ID)

    def scene_id(self, scene_key: str) -> int:
        return self._ids("scenes", [scene_key], MAX_SCENE_ID)[scene_key]
