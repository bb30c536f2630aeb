"""One scene -> grid windows -> quality filters -> 202-band patches, with rejection counts."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
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

from spectralearth.config import CurateSettings
from spectralearth.enmap.l2a import PRODUCT_NAME_RE, is_product_entry, product_name, scene_key_of
from spectralearth.enmap.scene import COVER_FRACTIONS, NODATA, ProductError
from spectralearth.enmap.view import SceneView, open_view
from spectralearth.io import EarlySync, atomic_path, flush_to_disk, fsync_dirs
from spectralearth.patches.grid import Cell, Registry, cells_in_scene
from spectralearth.patches.store import (
    REGISTRY_FILE,
    fragment_paths,
    location_folder,
    read_fragment,
    scene_shard_name,
    scene_shard_stream,
    with_location_ids,
    write_patch,
)

STAGING_DIR = ".staging"
# Filter order: a window rejected for several reasons is counted under the first one.
FILTERS = (
    ("nodata", "nodata_frac", "max_nodata_frac"),
    ("cloud", "cloud_frac", "max_cloud_frac"),
    ("snow", "snow_frac", "max_snow_frac"),
    ("haze", "haze_frac", "max_haze_frac"),
    ("cloudshadow", "cloudshadow_frac", "max_cloudshadow_frac"),
    ("cirrus", "cirrus_frac", "max_cirrus_frac"),
)
# Scenes whose read buffer (the strips one row of windows spans, 202 bands, int16) fits this
# size are read strip by strip; wider ones window by window.
WHOLE_SCENE_MAX_BYTES = 2 * 1024**3
QL_FOR = COVER_FRACTIONS


@dataclass
class SceneCuration:
    scene: str
    scene_id: int
    windows: int
    kept: int
    rejected: dict[str, int] = field(default_factory=dict)
    rows: pd.DataFrame | None = None
    missing_masks: tuple[str, ...] = ()  # quality layers absent, their filters off

    def as_metadata(self) -> dict:
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
    kept are removed, so nothing is duplicated. Raises ProductError naming the product.
    """
    view = open_view(product_dir, missing_masks=settings.missing_masks)
    product = view.scene
    patches_root = Path(patches_root)
    view_wl = view.wavelengths
    grid = view.grid
    transform, width, height, crs = grid.transform, grid.width, grid.height, grid.crs
    with rasterio.open(product.image_path) as src:
        block_h = src.block_shapes[0][0]
    epsg = view.epsg
    try:
        cells = cells_in_scene(tuple(transform), width, height, epsg, settings.patch_size)
    except ValueError as exc:
        raise ProductError(product.name, str(exc)) from exc

    registry = Registry(patches_root / REGISTRY_FILE)
    registry.register_scenes(scene_keys)
    scene_id = registry.scene_id(product.scene_key)
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform
    limits = {attr: getattr(settings, attr) for _, _, attr in FILTERS}
    rejected: Counter[str] = Counter()
    p = settings.patch_size
    n_bands = len(view.bands)
    strip_wise = bool(cells) and _strip_bytes(n_bands, width, p, block_h) <= WHOLE_SCENE_MAX_BYTES
    masks = {}
    if strip_wise:  # QL masks are one byte a pixel: read whole
        masks = {layer: view.mask(layer) for layer in QL_FOR.values() if view.has_mask(layer)}

    # Patches go to a staging folder first: their location ids (hence release paths) are
    # only known once the keys are registered, which happens under the registry lock
    shard = scene_shard_name(product.name)
    staging = patches_root / STAGING_DIR / product.name
    shutil.rmtree(staging, ignore_errors=True)
    tags = {
        "scene_id": f"{scene_id:05d}",
        "product": product.name,
        "datetime": product.meta.start_time.isoformat(),
    }
    rows = []

    def curate_window(cell: Cell, pieces: list[np.ndarray]) -> None:
        """Filter one window; keep it: staged GeoTIFF, shard slot, index row (writer thread)."""
        win = Window(cell.col_off, cell.row_off, p, p)
        raw = _joined(pieces)
        rows_, cols_ = slice(cell.row_off, cell.row_off + p), slice(cell.col_off, cell.col_off + p)
        fracs = {"nodata_frac": float(np.any(raw == NODATA, axis=0).mean())}
        for col, layer in QL_FOR.items():
            if not view.has_mask(layer):  # a generic image, or missing and ignored
                fracs[col] = 0.0
            elif strip_wise:
                fracs[col] = float(masks[layer][rows_, cols_].mean())
            else:
                fracs[col] = float(view.mask(layer, win).mean())
        reason = next(
            (name for name, col, attr in FILTERS if fracs[col] > limits[attr] + 1e-12), None
        )
        if reason:
            rejected[reason] += 1
            return
        shard_index = len(rows)
        write_patch(
            staging / f"{shard_index:05d}.tif",
            raw,
            crs=crs,
            transform=rasterio.windows.transform(win, transform),
            wavelengths=view_wl,
            tags={**tags, "location_key": cell.key},
        )
        syncer.path(staging / f"{shard_index:05d}.tif")
        shard_append(raw)
        footprint = box(*rasterio.windows.bounds(win, transform))
        # integer sums: exact, and several times faster than a float mean
        sums = raw.sum(axis=(1, 2), dtype=np.int64)
        rows.append(
            {
                "location_key": cell.key,
                "scene_id": scene_id,
                "product": product.name,
                "datetime": pd.Timestamp(product.meta.start_time),
                "crs": f"EPSG:{epsg}",
                "row_off": cell.row_off,
                "col_off": cell.col_off,
                "patch_size": p,
                "shard": shard,
                "shard_index": shard_index,
                "valid_frac": 1.0 - fracs["nodata_frac"],
                **fracs,
                "n_bands": int(raw.shape[0]),
                "band_means": (sums / (p * p)).astype(np.float32).tolist(),
                "mean_reflectance": float(sums.sum() / raw.size),
                "geometry_native": footprint.wkt,
                "geometry": shapely.transform(footprint, to_wgs84, interleaved=False),
            }
        )

    # This thread only reads the scene, strip by strip; each window goes to one writer
    # thread (filters, GeoTIFF, shard slot, index row: in window order, so shard indices
    # stay as they were) while the next strip is decompressed (GDAL releases the GIL), and a
    # third thread makes each written file durable, so the flush below finds the scene
    # already on disk instead of waiting for all of it
    shard_path = patches_root / "shards" / shard
    in_flight = max(2, 2 * (width // p))  # windows queued for the writer: bounds memory
    with (
        EarlySync() as syncer,
        scene_shard_stream(
            shard_path, len(cells), on_write=lambda fd: syncer.fd(fd, shard_path)
        ) as shard_append,
    ):
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
        syncer.wait()  # re-raise a failed sync; done before the shard's file is closed
    flush_to_disk()  # staged patches and shard durable before they are renamed into place

    with registry.lock():
        registry.apply_moves(lambda loc: location_folder(patches_root, loc))
        loc_ids, _ = registry.assign_locations(r["location_key"] for r in rows)
        registry.apply_moves(lambda loc: location_folder(patches_root, loc))
        frame = with_location_ids(pd.DataFrame(rows), loc_ids)
        for rec in frame.to_dict("records"):
            (patches_root / rec["path"]).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / f"{rec['shard_index']:05d}.tif", patches_root / rec["path"])
        # the renames durable before the fragment makes them visible
        fsync_dirs((patches_root / p).parent for p in frame["path"])
        result = SceneCuration(
            product.name,
            scene_id,
            len(cells),
            len(frame),
            dict(rejected),
            frame,
            view.missing_masks,
        )
        _write_fragment(patches_root, result, product.scene_key, registry)
    shutil.rmtree(staging, ignore_errors=True)
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
        tmp.write_text(json.dumps(result.as_metadata(), indent=1))
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
            name = f.name[: -len(".parquet")]
            (patches_root / "shards" / scene_shard_name(name)).unlink(missing_ok=True)
