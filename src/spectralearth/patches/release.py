"""Index a released SpectralEarth tree so that it trains without curating.

The published pretraining dataset is laid out as this project's curated folders are::

    <root>/enmap/<location:07d>/<scene:05d>.tif      int16, 202 bands, 128 x 128 px

:func:`index_release` reads every file once (tags for the footprint, pixels for the CRC-32)
and writes ``<root>/index.parquet`` in the store's format: locations from the folder names,
scenes from the file names, footprints (native and WGS84) from the GeoTIFFs, acquisition time
from a ``datetime`` tag where the files carry one, the pixel block offset where the file is
laid out for it (uncompressed, band-sequential, little-endian; any other file is read through
rasterio: slower, same pixels), and a location-disjoint split. A file that cannot be read, or
does not have the tree's patch shape, stops the run naming it, or with
``skip_unreadable=True`` is left out and listed in the result.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely.geometry import box

from spectralearth.patches.reader import VerifiedFiles, fingerprint
from spectralearth.patches.store import (
    INDEX_FILE,
    assign_split,
    pixel_block,
    write_index,
)

SENSOR_DIR = "enmap"
LOCATION_RE = re.compile(r"^\d{7}$")
SCENE_RE = re.compile(r"^\d{5}\.tif$")


class ReleaseIndexError(ValueError):
    """Files of a released tree cannot be indexed; names each and why."""


@dataclass(frozen=True)
class ReleaseIndex:
    """An indexed released tree: what went in, what was left out (path -> reason)."""

    root: Path
    patches: int
    locations: int
    scenes: int
    index_version: str
    skipped: dict[str, str] = field(default_factory=dict, hash=False)
    seconds: float = 0.0

    def metadata(self) -> dict:
        return {
            "root": str(self.root),
            "patches": self.patches,
            "locations": self.locations,
            "scenes": self.scenes,
            "index_version": self.index_version,
            "skipped": dict(self.skipped),
            "seconds": round(self.seconds, 2),
        }

    def summary(self) -> str:
        left = f", {len(self.skipped)} unreadable file(s) left out" if self.skipped else ""
        return (
            f"index-release: {self.patches} patches at {self.locations} locations "
            f"({self.scenes} scenes){left} -> {self.root / INDEX_FILE} ({self.index_version})"
        )


@dataclass(frozen=True)
class _Patch:
    row: dict
    fingerprint: tuple
    shape: tuple[int, int, int]


def index_release(
    root: str | os.PathLike,
    *,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    skip_unreadable: bool = False,
    workers: int = 4,
) -> ReleaseIndex:
    """Build ``<root>/index.parquet`` from a released tree (module doc). Raises
    :class:`ReleaseIndexError` naming every unreadable file unless ``skip_unreadable``;
    FileNotFoundError when ``root`` has no ``enmap/<location>/<scene>.tif`` file."""
    start = time.perf_counter()
    root = Path(root)
    sensor = root / SENSOR_DIR
    if not sensor.is_dir():
        raise FileNotFoundError(
            f"{root} is not a released SpectralEarth tree: no {sensor} folder "
            "(expected enmap/<location:07d>/<scene:05d>.tif)"
        )
    if (root / "scenes").is_dir():
        raise ReleaseIndexError(
            f"{root} is a curated folder (it has scenes/): its index is built by curation "
            "(`spectralearth curate`), not by index-release"
        )
    files, unreadable = _layout(root, sensor)
    if not files and not unreadable:
        raise FileNotFoundError(f"no enmap/<location:07d>/<scene:05d>.tif file under {root}")

    def read(rel: str) -> _Patch | str:
        try:
            return _read_patch(root, rel)
        except Exception as exc:  # any unreadable file: named, never a crash of the run
            return f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max(1, workers)) as pool:  # reads and zlib release the GIL
        found = dict(zip(files, pool.map(read, files), strict=True))
    unreadable.update({rel: why for rel, why in found.items() if isinstance(why, str)})
    patches = {rel: p for rel, p in found.items() if not isinstance(p, str)}
    if patches:  # the tree's patch shape: what most files have
        (shape, _), *_ = Counter(p.shape for p in patches.values()).most_common(1)
        for rel, p in list(patches.items()):
            if p.shape != shape:
                unreadable[rel] = (
                    f"{p.shape[0]} bands of {p.shape[1]} x {p.shape[2]} px, the tree's patches "
                    f"are {shape[0]} bands of {shape[1]} x {shape[2]} px"
                )
                del patches[rel]
    if unreadable and not skip_unreadable:
        shown = "\n  ".join(f"{root / r}: {why}" for r, why in sorted(unreadable.items())[:10])
        more = f"\n  ... and {len(unreadable) - 10} more" if len(unreadable) > 10 else ""
        raise ReleaseIndexError(
            f"{len(unreadable)} file(s) of {root} cannot be indexed:\n  {shown}{more}\n"
            "Restore them, or leave them out with --skip-unreadable (skip_unreadable=True); "
            f"no index was written"
        )
    rows = [patches[rel].row for rel in sorted(patches)]
    frame = pd.DataFrame(rows)
    if not len(frame):
        raise ReleaseIndexError(f"no readable patch under {root}: no index was written")
    frame["datetime"] = pd.to_datetime(frame["datetime"], utc=True)
    frame["split"] = [assign_split(k, val_frac, test_frac) for k in frame["location_key"]]
    gdf = gpd.GeoDataFrame(frame, geometry="geometry", crs="EPSG:4326")
    gdf = gdf.sort_values("patch_id").reset_index(drop=True)
    index = write_index(root, gdf, None, source="released tree", skipped=dict(unreadable))
    VerifiedFiles().record((p.fingerprint, p.row["pixels_crc32"]) for p in patches.values())
    return ReleaseIndex(
        root=root,
        patches=len(index),
        locations=int(index["location_id"].nunique()),
        scenes=int(index["scene_id"].nunique()),
        index_version=index.attrs["spectralearth"]["index_version"],
        skipped=dict(sorted(unreadable.items())),
        seconds=time.perf_counter() - start,
    )


def _layout(root: Path, sensor: Path) -> tuple[list[str], dict[str, str]]:
    """Release-layout files (relative paths) and, as unreadable, .tif files named otherwise."""
    files, odd = [], {}
    for loc in sorted(sensor.iterdir()):
        if not loc.is_dir():
            continue
        for f in sorted(loc.iterdir()):
            if not f.name.lower().endswith((".tif", ".tiff")) or f.name.startswith("."):
                continue
            rel = str(f.relative_to(root))
            if LOCATION_RE.match(loc.name) and SCENE_RE.match(f.name):
                files.append(rel)
            else:
                odd[rel] = "not named enmap/<location:07d>/<scene:05d>.tif"
    return files, odd


def _read_patch(root: Path, rel: str) -> _Patch:
    import rasterio
    from pyproj import Transformer
    from shapely import transform as shp_transform

    from spectralearth.patches.reader import file_crc32

    path = root / rel
    st = os.stat(path)  # before the read: a later write cannot hide behind this fingerprint
    with rasterio.open(path) as src:
        shape = (src.count, src.height, src.width)
        if src.dtypes[0] != "int16" or len(set(src.dtypes)) != 1:
            raise ValueError(f"{src.dtypes[0]} pixels, not int16 (reflectance x 10000)")
        if src.height != src.width:
            raise ValueError(f"{src.width} x {src.height} px: patches are square")
        if src.crs is None or src.crs.to_epsg() is None:
            raise ValueError("no EPSG-coded CRS")
        epsg = src.crs.to_epsg()
        footprint = box(*src.bounds)
        tags = src.tags()
    block = pixel_block(path)
    offset = block.offset if block.dtype == "<i2" and block.shape == shape else -1
    crc = file_crc32(str(path), offset, shape)
    to_wgs84 = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform
    location_id, scene_id = int(Path(rel).parent.name), int(Path(rel).stem)
    when = pd.to_datetime(tags.get("datetime"), utc=True, errors="coerce")
    row = {
        "patch_id": f"{location_id:07d}/{scene_id:05d}",
        "location_id": location_id,
        "scene_id": scene_id,
        "location_key": f"release:{location_id:07d}",
        "product": tags.get("product") or None,
        "datetime": when,
        "crs": f"EPSG:{epsg}",
        "patch_size": shape[1],
        "n_bands": shape[0],
        "path": rel,
        "file_size": int(st.st_size),
        "data_offset": int(offset),
        "pixels_crc32": int(crc),
        "geometry_native": footprint.wkt,
        "geometry": shp_transform(footprint, to_wgs84, interleaved=False),
    }
    return _Patch(row, fingerprint(st), shape)


__all__ = ["ReleaseIndex", "ReleaseIndexError", "index_release"]
