"""One scene -> grid windows -> quality filters -> 202-band patches, with rejection counts."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import Transformer
from rasterio.windows import Window
from shapely.geometry import box

from spectralearth.bands import BandMatchError, select_view
from spectralearth.config import CurateSettings
from spectralearth.enmap.product import (
    NODATA,
    PRODUCT_NAME_RE,
    ProductError,
    open_scene,
    scene_key_of,
)
from spectralearth.io import atomic_path, flush_to_disk
from spectralearth.patches.grid import Cell, Registry, cells_in_scene
from spectralearth.patches.store import (
    patch_relpath,
    scene_shard_name,
    write_patch,
    write_scene_shard,
)

# Filter order: a window rejected for several reasons is counted under the first one.
FILTERS = (
    ("nodata", "nodata_frac", "max_nodata_frac"),
    ("cloud", "cloud_frac", "max_cloud_frac"),
    ("snow", "snow_frac", "max_snow_frac"),
    ("haze", "haze_frac", "max_haze_frac"),
    ("cloudshadow", "cloudshadow_frac", "max_cloudshadow_frac"),
    ("cirrus", "cirrus_frac", "max_cirrus_frac"),
)
# Scenes up to this size (202 bands, int16) are read in one go; larger ones window by window.
WHOLE_SCENE_MAX_BYTES = 2 * 1024**3
QL_FOR = {
    "cloud_frac": "QL_QUALITY_CLOUD",
    "snow_frac": "QL_QUALITY_SNOW",
    "haze_frac": "QL_QUALITY_HAZE",
    "cloudshadow_frac": "QL_QUALITY_CLOUDSHADOW",
    "cirrus_frac": "QL_QUALITY_CIRRUS",
}


@dataclass
class SceneCuration:
    scene: str
    scene_id: int
    windows: int
    kept: int
    rejected: dict[str, int] = field(default_factory=dict)
    rows: pd.DataFrame | None = None

    def as_metadata(self) -> dict:
        return {
            "scene": self.scene,
            "scene_id": self.scene_id,
            "windows": self.windows,
            "kept": self.kept,
            "rejected": dict(self.rejected),
        }


def fragment_paths(patches_root: Path, scene: str) -> tuple[Path, Path]:
    """Per-scene index fragment and curation report, merged later by build_index."""
    base = Path(patches_root) / "scenes"
    return base / f"{scene}.parquet", base / f"{scene}.json"


def curate_scene(
    product_dir: str | Path, patches_root: str | Path, settings: CurateSettings
) -> SceneCuration:
    """Cut one scene (L2A product or generic image) into patches under ``patches_root`` and
    write its index fragment.

    Rerunning a scene replaces its patches: files of an earlier run that are no longer
    kept are removed, so nothing is duplicated. Raises ProductError naming the product.
    """
    product = open_scene(product_dir)
    patches_root = Path(patches_root)
    try:
        view = select_view(product.meta.wavelengths)
    except BandMatchError as exc:
        raise ProductError(
            product.name, f"bands cannot be matched to the 202-band view: {exc}"
        ) from exc
    view_wl = product.meta.wavelengths[view]

    with rasterio.open(product.image_path) as src:
        transform, width, height, crs = src.transform, src.width, src.height, src.crs
    epsg = crs.to_epsg() if crs else None
    if epsg is None:
        raise ProductError(product.name, "the image has no EPSG-coded CRS")
    if product.meta.start_time is None:
        raise ProductError(product.name, "no acquisition time: patches need one")
    try:
        cells = cells_in_scene(tuple(transform), width, height, epsg, settings.patch_size)
    except ValueError as exc:
        raise ProductError(product.name, str(exc)) from exc

    registry = Registry(patches_root / "registry.sqlite")
    scene_id = registry.scene_id(product.scene_key)
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform
    limits = {attr: getattr(settings, attr) for _, _, attr in FILTERS}
    rejected: Counter[str] = Counter()
    kept: list[tuple[Cell, np.ndarray, dict]] = []
    p = settings.patch_size
    # One read of the whole scene when it fits: grid windows rarely align with the file's
    # tiles, and window-by-window reads decompress each tile up to 4 times (~3x a full read)
    whole, masks = None, {}
    if cells and len(view) * height * width * 2 <= WHOLE_SCENE_MAX_BYTES:
        whole = product.read(bands=view)
        masks = {
            layer: product.read_mask(layer)
            for layer in QL_FOR.values()
            if layer in product.ql_paths
        }
    for cell in cells:
        win = Window(cell.col_off, cell.row_off, p, p)
        rows_, cols_ = slice(cell.row_off, cell.row_off + p), slice(cell.col_off, cell.col_off + p)
        raw = whole[:, rows_, cols_] if whole is not None else product.read(win, bands=view)
        fracs = {"nodata_frac": float(np.any(raw == NODATA, axis=0).mean())}
        for col, layer in QL_FOR.items():
            if layer not in product.ql_paths:
                fracs[col] = 0.0
            elif whole is not None:
                fracs[col] = float(masks[layer][rows_, cols_].mean())
            else:
                fracs[col] = float(product.read_mask(layer, win).mean())
        reason = next(
            (name for name, col, attr in FILTERS if fracs[col] > limits[attr] + 1e-12), None
        )
        if reason:
            rejected[reason] += 1
            continue
        kept.append((cell, raw, fracs))

    loc_ids = registry.location_ids(c.key for c, _, _ in kept)
    shard = scene_shard_name(product.name)
    rows = []
    for shard_index, (cell, raw, fracs) in enumerate(kept):
        loc = loc_ids[cell.key]
        rel = patch_relpath(loc, scene_id)
        patch_transform = rasterio.windows.transform(
            Window(cell.col_off, cell.row_off, p, p), transform
        )
        write_patch(
            patches_root / rel,
            raw,
            crs=crs,
            transform=patch_transform,
            wavelengths=view_wl,
            tags={
                "scene_id": f"{scene_id:05d}",
                "location_id": f"{loc:07d}",
                "product": product.name,
                "datetime": product.meta.start_time.isoformat(),
            },
        )
        footprint = box(
            *rasterio.windows.bounds(Window(cell.col_off, cell.row_off, p, p), transform)
        )
        rows.append(
            {
                "patch_id": f"{loc:07d}/{scene_id:05d}",
                "location_id": loc,
                "scene_id": scene_id,
                "location_key": cell.key,
                "product": product.name,
                "datetime": pd.Timestamp(product.meta.start_time),
                "crs": f"EPSG:{epsg}",
                "row_off": cell.row_off,
                "col_off": cell.col_off,
                "patch_size": p,
                "path": rel,
                "shard": shard,
                "shard_index": shard_index,
                "valid_frac": 1.0 - fracs["nodata_frac"],
                **fracs,
                "n_bands": int(raw.shape[0]),
                "band_means": raw.reshape(raw.shape[0], -1)
                .mean(axis=1)
                .astype(np.float32)
                .tolist(),
                "mean_reflectance": float(raw.mean()),
                "geometry_native": footprint.wkt,
                "geometry": shapely.transform(footprint, to_wgs84, interleaved=False),
            }
        )
    frame = pd.DataFrame(rows)
    # the scene's training shard, written from the arrays in hand (no re-read of the patches):
    # a new scene adds one shard file and touches no other
    write_scene_shard(patches_root / "shards" / shard, [raw for _, raw, _ in kept])
    flush_to_disk()  # patches and shard durable before the fragment makes them visible
    result = SceneCuration(product.name, scene_id, len(cells), len(rows), dict(rejected), frame)
    _write_fragment(patches_root, result, product.scene_key)
    return result


def _write_fragment(patches_root: Path, result: SceneCuration, scene_key: str) -> None:
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
        old = pd.read_parquet(f)
        old_paths |= set(old["path"]) if "path" in old.columns else set()
    frame = result.rows.copy()
    if len(frame):
        frame["geometry"] = frame["geometry"].map(lambda g: g.wkb)
    with atomic_path(frag) as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(report) as tmp:
        tmp.write_text(json.dumps(result.as_metadata(), indent=1))
    for stale in old_paths - set(result.rows["path"] if len(result.rows) else []):
        (patches_root / stale).unlink(missing_ok=True)
    for f in replaced:
        if f != frag:
            f.unlink(missing_ok=True)
            f.with_suffix(".json").unlink(missing_ok=True)
            name = f.name[: -len(".parquet")]
            (patches_root / "shards" / scene_shard_name(name)).unlink(missing_ok=True)
