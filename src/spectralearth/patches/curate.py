"""One scene -> grid windows -> quality filters -> 202-band patches, with rejection counts.

:func:`curate_scene` in four units, in the order a scene goes through them:

1. :class:`WindowFilter`: a window's nodata and quality-layer fractions, and the first
   filter (``FILTERS`` order) it fails;
2. :func:`index_row`: the index row of a kept window (keys, fractions, band means, footprints,
   and what ties it to its file: size, pixel block offset, CRC-32);
3. :class:`StagedScene`: the kept patches written under ``.staging/<product>/`` and made
   durable in the background; discarded whole if anything fails;
4. :func:`commit_scene`: under the registry lock, location ids assigned, the staged files
   renamed into the release layout and the scene's fragment written. A marker
   (``scenes/<scene>.pending``) is on disk from before the first rename until the fragment is
   committed, so a run killed in between leaves a state that every reader refuses, naming
   the scene, instead of files that no longer match the index.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import Transformer
from rasterio.windows import Window
from shapely.geometry import box

from spectralearth.config import FILTER_LIMITS, CurateSettings
from spectralearth.enmap.l2a import PRODUCT_NAME_RE, is_product_entry, product_name, scene_key_of
from spectralearth.enmap.scene import COVER_FRACTIONS, NODATA, ProductError
from spectralearth.enmap.view import SceneView, open_view
from spectralearth.io import EarlySync, atomic_path, atomic_write_text, flush_to_disk, fsync_dirs
from spectralearth.patches.grid import Cell, Registry, cells_in_scene
from spectralearth.patches.lock import scene_lock
from spectralearth.patches.reader import VerifiedFiles
from spectralearth.patches.store import (
    REGISTRY_FILE,
    StoredPatch,
    fragment_paths,
    location_folder,
    pending_marker,
    read_fragment,
    with_location_ids,
    write_patch,
)

STAGING_DIR = ".staging"
# (filter, index column, settings limit), in order: a window rejected for several reasons is
# counted under the first one. "max_cloud_frac" -> ("cloud", "cloud_frac", "max_cloud_frac").
FILTERS = tuple((limit[4:-5], limit[4:], limit) for limit in FILTER_LIMITS)
# Scenes whose read buffer (the strips one row of windows spans, 202 bands, int16) fits this
# size are read strip by strip; wider ones window by window.
WHOLE_SCENE_MAX_BYTES = 2 * 1024**3
QL_FOR = COVER_FRACTIONS


@dataclass(frozen=True)
class SceneCuration:
    """One curated scene: its windows, how many were kept, the rejections per filter (first
    failing filter) and its index rows (with current location ids and release paths)."""

    scene: str
    scene_id: int
    windows: int
    kept: int
    rejected: Mapping[str, int] = field(default_factory=dict, hash=False)
    rows: pd.DataFrame | None = field(default=None, compare=False, hash=False, repr=False)
    missing_masks: tuple[str, ...] = ()  # quality layers absent, their filters off

    def metadata(self) -> dict:
        meta = {
            "scene": self.scene,
            "scene_id": self.scene_id,
            "windows": self.windows,
            "kept": self.kept,
            "rejected": dict(self.rejected),
        }
        if self.missing_masks:
            meta["missing_masks"] = list(self.missing_masks)
        return meta

    as_metadata = metadata  # the name callers of the old mutable result used

    def summary(self) -> str:
        return (
            f"{self.scene}: kept {self.kept} of {self.windows} windows, "
            f"rejected {dict(self.rejected)}"
        )


def open_scene_view(product_dir: str | Path, settings: CurateSettings) -> tuple[SceneView, int]:
    """The one place curation uses the scene reader: the validated 202-band view
    (:func:`spectralearth.enmap.view.open_view`) and the image's block height (the strips
    it is read in). Raises ProductError naming the product."""
    view = open_view(product_dir, missing_masks=settings.missing_masks)
    with rasterio.open(view.scene.image_path) as src:
        block_h = src.block_shapes[0][0]
    return view, block_h


def check_patch_size(view: SceneView, patch_size) -> int:
    """``patch_size`` as a positive int no larger than the scene, or a ValueError naming the
    scene and its size (ProductError, per scene, when only this scene is too small)."""
    size = f"{view.grid.width} x {view.grid.height} px"
    if isinstance(patch_size, bool) or not isinstance(patch_size, int | np.integer):
        raise ValueError(
            f"patch_size {patch_size!r} is not a whole number of pixels (scene {view.name} "
            f"is {size}): use --patch-size"
        )
    if patch_size <= 0:
        raise ValueError(
            f"patch_size {patch_size} must be a positive number of pixels (scene "
            f"{view.name} is {size}): use --patch-size"
        )
    if patch_size > min(view.grid.width, view.grid.height):
        raise ProductError(
            view.name,
            f"the scene is {size}, smaller than patch_size {patch_size}: use --patch-size",
        )
    return int(patch_size)


class WindowFilter:
    """A window's quality fractions and the first filter it fails.

    ``nodata_frac`` counts pixels with any band at nodata; the quality-layer fractions come
    from the product's QL masks (read whole when ``whole_masks``, else per window); a product
    without a layer has fraction 0 for it.
    """

    def __init__(self, view: SceneView, settings: CurateSettings, whole_masks: bool):
        self.view = view
        self.patch_size = int(settings.patch_size)
        self.limits = {attr: getattr(settings, attr) for _, _, attr in FILTERS}
        self.masks = {}
        if whole_masks:  # QL masks are one byte a pixel: read whole
            self.masks = {
                layer: view.mask(layer) for layer in QL_FOR.values() if view.has_mask(layer)
            }

    def fractions(self, cell: Cell, raw: np.ndarray) -> dict[str, float]:
        p = self.patch_size
        rows, cols = slice(cell.row_off, cell.row_off + p), slice(cell.col_off, cell.col_off + p)
        fracs = {"nodata_frac": float(np.any(raw == NODATA, axis=0).mean())}
        for col, layer in QL_FOR.items():
            if not self.view.has_mask(layer):  # a generic image, or missing and ignored
                fracs[col] = 0.0
            elif self.masks:
                fracs[col] = float(self.masks[layer][rows, cols].mean())
            else:
                win = Window(cell.col_off, cell.row_off, p, p)
                fracs[col] = float(self.view.mask(layer, win).mean())
        return fracs

    def reason(self, fracs: Mapping[str, float]) -> str | None:
        """The first filter the window fails, or None when it is kept."""
        return next(
            (name for name, col, attr in FILTERS if fracs[col] > self.limits[attr] + 1e-12),
            None,
        )


def index_row(
    view: SceneView,
    scene_id: int,
    cell: Cell,
    raw: np.ndarray,
    fracs: Mapping[str, float],
    stored: StoredPatch,
    to_wgs84,
) -> dict:
    """The index row of one kept window (before its location id is known)."""
    p = raw.shape[-1]
    win = Window(cell.col_off, cell.row_off, p, p)
    footprint = box(*rasterio.windows.bounds(win, view.grid.transform))
    # integer sums: exact, and several times faster than a float mean
    sums = raw.sum(axis=(1, 2), dtype=np.int64)
    return {
        "location_key": cell.key,
        "scene_id": scene_id,
        "product": view.name,
        "datetime": pd.Timestamp(view.start_time),
        "crs": f"EPSG:{view.epsg}",
        "row_off": cell.row_off,
        "col_off": cell.col_off,
        "patch_size": p,
        "file_size": stored.file_size,
        "data_offset": stored.data_offset,
        "pixels_crc32": stored.pixels_crc32,
        "valid_frac": 1.0 - fracs["nodata_frac"],
        **fracs,
        "n_bands": int(raw.shape[0]),
        "band_means": (sums / (p * p)).astype(np.float32).tolist(),
        "mean_reflectance": float(sums.sum() / raw.size),
        "geometry_native": footprint.wkt,
        "geometry": shapely.transform(footprint, to_wgs84, interleaved=False),
    }


class StagedScene:
    """A scene's kept patches under ``<root>/.staging/<product>/`` until :func:`commit_scene`
    renames them into place. Each file is made durable on a background thread as soon as it
    is written (:class:`~spectralearth.io.EarlySync`); :meth:`finish` waits for that and
    flushes once. Used as a context manager, it removes the staging folder on any error (a
    full disk leaves nothing behind)."""

    def __init__(self, root: Path, view: SceneView, scene_id: int):
        self.folder = Path(root) / STAGING_DIR / view.name
        self.view = view
        self.tags = {
            "scene_id": f"{scene_id:05d}",
            "product": view.name,
            "datetime": view.start_time.isoformat(),
        }
        self.files: list[Path] = []
        self._syncer = EarlySync()

    def __enter__(self) -> StagedScene:
        shutil.rmtree(self.folder, ignore_errors=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._syncer.close()
        if exc_type is not None:
            self.discard()

    def add(self, cell: Cell, raw: np.ndarray) -> tuple[Path, StoredPatch]:
        """Write one kept window's GeoTIFF; return its staged path and what the index records."""
        p = raw.shape[-1]
        win = Window(cell.col_off, cell.row_off, p, p)
        path = self.folder / f"{len(self.files):05d}.tif"
        stored = write_patch(
            path,
            raw,
            crs=self.view.grid.crs,
            transform=rasterio.windows.transform(win, self.view.grid.transform),
            wavelengths=self.view.wavelengths,
            tags={**self.tags, "location_key": cell.key},
        )
        self.files.append(path)
        self._syncer.path(path)
        return path, stored

    def finish(self) -> None:
        """Every staged file durable (re-raises a failed sync, naming the file)."""
        self._syncer.wait()
        flush_to_disk()

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def curate_scene(
    product_dir: str | Path,
    patches_root: str | Path,
    settings: CurateSettings,
    scene_keys: Iterable[str] = (),
) -> SceneCuration:
    """Cut one scene (L2A product or generic image) into patches under ``patches_root`` and
    write its index fragment.

    ``scene_keys``: the archive's scenes (:func:`scene_key_for`, or the catalogue's
    ``scene_key`` column), registered first in sorted order so that scene ids, hence release
    paths, do not depend on the order scenes are curated in. Without them the scene gets the
    next free id (arrival order).

    Rerunning a scene replaces its patches: files of an earlier run that are no longer
    kept are removed, so nothing is duplicated. Raises ProductError naming the product
    (also when the scene is smaller than ``patch_size``), ValueError for a patch size that is
    not a positive number of pixels, and
    :class:`~spectralearth.patches.lock.CurationBusyError` at once when another process
    curates this scene or holds the folder for a whole-archive run.
    """
    view, block_h = open_scene_view(product_dir, settings)
    grid = view.grid
    patches_root = Path(patches_root)
    p = check_patch_size(view, settings.patch_size)
    try:
        cells = cells_in_scene(tuple(grid.transform), grid.width, grid.height, view.epsg, p)
    except ValueError as exc:
        raise ProductError(view.name, str(exc)) from exc

    with scene_lock(patches_root, view.name):
        registry = Registry(patches_root / REGISTRY_FILE)
        registry.register_scenes(scene_keys)
        scene_id = registry.scene_id(view.scene_key)
        strip_wise = (
            bool(cells)
            and _strip_bytes(len(view.bands), grid.width, p, block_h) <= WHOLE_SCENE_MAX_BYTES
        )
        window_filter = WindowFilter(view, settings, whole_masks=strip_wise)
        to_wgs84 = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform
        rejected: Counter[str] = Counter()
        rows: list[dict] = []
        with StagedScene(patches_root, view, scene_id) as staged:

            def curate_window(cell: Cell, pieces: list[np.ndarray]) -> None:
                """Filter one window; keep it: staged GeoTIFF and index row (writer thread)."""
                raw = _joined(pieces)
                fracs = window_filter.fractions(cell, raw)
                reason = window_filter.reason(fracs)
                if reason:
                    rejected[reason] += 1
                    return
                _, stored = staged.add(cell, raw)
                rows.append(index_row(view, scene_id, cell, raw, fracs, stored, to_wgs84))

            _each_window(view, cells, p, block_h, curate_window)
            staged.finish()  # staged patches durable before they are renamed into place
            result = commit_scene(
                patches_root, view, registry, staged, rows, (scene_id, len(cells), rejected)
            )
        staged.discard()
    return result


def _each_window(view: SceneView, cells: list[Cell], p: int, block_h: int, curate_window) -> None:
    """Run ``curate_window(cell, pieces)`` for every cell, in order, on one writer thread.

    This thread only reads the scene, strip by strip; each window goes to the writer thread
    (filters, GeoTIFF, index row: in window order, so staged names stay as they were) while
    the next strip is decompressed (GDAL releases the GIL), and :class:`StagedScene`'s sync
    thread makes each written file durable, so the flush before the commit finds the scene
    already on disk instead of waiting for all of it.
    """
    width, height = view.grid.width, view.grid.height
    in_flight = max(2, 2 * (width // p))  # windows queued for the writer: bounds memory
    writer = ThreadPoolExecutor(1)
    done: list[Future] = []
    try:
        for cell, pieces in _cell_pixels(view, cells, p, width, height, block_h):
            done.append(writer.submit(curate_window, cell, pieces))
            del pieces
            if len(done) > in_flight:
                done[-in_flight - 1].result()  # re-raise a failure here
        for f in done:
            f.result()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)


def commit_scene(
    patches_root: Path,
    view: SceneView,
    registry: Registry,
    staged: StagedScene,
    rows: list[dict],
    counts: tuple[int, int, Mapping[str, int]],
) -> SceneCuration:
    """Make a staged scene visible: location ids, renames into the release layout, the
    scene's fragment and report, stale files of its earlier runs removed. All of it under the
    registry lock, between a durable pending marker and its removal (module doc).
    ``counts``: the scene id, the number of windows and the rejections per filter."""
    scene_id, windows, rejected = counts
    marker = pending_marker(patches_root, view.name)
    with registry.lock():
        registry.apply_moves(lambda loc: location_folder(patches_root, loc))
        loc_ids, _ = registry.assign_locations(r["location_key"] for r in rows)
        registry.apply_moves(lambda loc: location_folder(patches_root, loc))
        frame = with_location_ids(pd.DataFrame(rows), loc_ids)
        atomic_write_text(marker, json.dumps({"pid": os.getpid(), "patches": len(frame)}))
        fsync_dirs([marker.parent])
        for rec, staged_path in zip(frame.to_dict("records"), staged.files, strict=True):
            (patches_root / rec["path"]).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged_path, patches_root / rec["path"])
        # the renames durable before the fragment makes them visible
        fsync_dirs((patches_root / p).parent for p in frame["path"])
        result = SceneCuration(
            view.name, scene_id, windows, len(frame), dict(rejected), frame, view.missing_masks
        )
        _write_fragment(patches_root, result, view.scene_key, registry)
        if len(frame):  # readers trust these files from a stat (patches.reader)
            VerifiedFiles().record_files(
                (patches_root / path, crc)
                for path, crc in zip(frame["path"], frame["pixels_crc32"], strict=True)
            )
        marker.unlink()
        fsync_dirs([marker.parent])
    return result


def scene_key_for(path: str | Path) -> str:
    """The registry key of a product entry (datatake, start and tile: the same for every
    processing) or of a generic image (its file stem), from the path alone."""
    path = Path(path)
    if is_product_entry(path):
        return scene_key_of(product_name(path))
    return path.stem


def _strip_bytes(n_bands: int, width: int, patch_size: int, block_h: int) -> int:
    """Most bytes the strip-wise read holds at once (the strips one row of windows spans)."""
    return n_bands * (_strip_rows(patch_size, block_h) + patch_size) * width * 2


def _strip_rows(patch_size: int, block_h: int) -> int:
    """Rows read at a time: whole rows of the file's blocks, at least one window high."""
    return block_h * -(-patch_size // block_h)


def _cell_pixels(
    view: SceneView, cells: list[Cell], p: int, width: int, height: int, block_h: int
) -> Iterator[tuple[Cell, list[np.ndarray]]]:
    """Each cell with its [bands, p, p] pixels, in the cells' (row-major) order, as pieces
    (views of the strips, top down) for :func:`_joined`.

    Grid windows rarely align with the file's tiles, and window-by-window reads decompress
    each tile up to 4 times (~3x a full read), so the scene is read in full-width strips of
    whole tile rows, each once, keeping only the strips the current row of windows spans.
    Scenes too wide for that buffer (``WHOLE_SCENE_MAX_BYTES``) are read window by window.
    """
    if _strip_bytes(len(view.bands), width, p, block_h) > WHOLE_SCENE_MAX_BYTES:
        for cell in cells:
            yield cell, [view.read(Window(cell.col_off, cell.row_off, p, p))]
        return
    chunk = _strip_rows(p, block_h)
    strips: list[tuple[int, np.ndarray]] = []  # (first row, [bands, rows, width]), top down
    next_row = last_r0 = 0
    for cell in cells:
        r0, r1 = cell.row_off, cell.row_off + p
        if r0 < last_r0:  # strips above were dropped: they would be missing, not re-read
            raise ValueError("cells must come in row-major order (cells_in_scene's)")
        last_r0 = r0
        strips = [(s0, s) for s0, s in strips if s0 + s.shape[1] > r0]
        next_row = max(next_row, r0 // block_h * block_h)  # skip rows above every window
        while next_row < r1:
            h = min(chunk, height - next_row)
            strips.append((next_row, view.read(Window(0, next_row, width, h))))
            next_row += h
        cols = slice(cell.col_off, cell.col_off + p)
        pieces = [
            s[:, max(r0 - s0, 0) : min(r1 - s0, s.shape[1]), cols]
            for s0, s in strips
            if s0 < r1 and s0 + s.shape[1] > r0
        ]
        yield cell, pieces


def _joined(pieces: list[np.ndarray]) -> np.ndarray:
    """One window's pixels as a C-contiguous array, from its row-wise pieces."""
    return np.concatenate(pieces, axis=1) if len(pieces) > 1 else np.ascontiguousarray(pieces[0])


def _write_fragment(
    patches_root: Path, result: SceneCuration, scene_key: str, registry: Registry
) -> None:
    frag, report = fragment_paths(patches_root, result.scene)
    # this product's earlier run, and other processings of the same datatake/tile, which
    # this one supersedes: their patches are replaced, never duplicated
    replaced = [frag] if frag.exists() else []
    for other in sorted((patches_root / "scenes").glob("*.parquet")):
        name = other.name[: -len(".parquet")]
        if name != result.scene and PRODUCT_NAME_RE.match(name) and scene_key_of(name) == scene_key:
            replaced.append(other)
    old_paths: set[str] = set()
    for f in replaced:
        old = read_fragment(patches_root, f.name[: -len(".parquet")], registry)
        old_paths |= set(old["path"])
    frame = result.rows.drop(columns=["location_id", "patch_id", "path"])
    if len(frame):
        frame["geometry"] = frame["geometry"].map(lambda g: g.wkb)
    with atomic_path(frag) as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(report) as tmp:
        tmp.write_text(json.dumps(result.metadata(), indent=1))
    for stale in old_paths - set(result.rows["path"] if len(result.rows) else []):
        (patches_root / stale).unlink(missing_ok=True)
        try:
            (patches_root / stale).parent.rmdir()  # a location left with no date
        except OSError:
            pass
    for f in replaced:
        if f != frag:
            f.unlink(missing_ok=True)
            f.with_suffix(".json").unlink(missing_ok=True)
            pending_marker(patches_root, f.name[: -len(".parquet")]).unlink(missing_ok=True)
