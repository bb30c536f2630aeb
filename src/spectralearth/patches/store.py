"""Release-layout writer, patch index, training shards and band statistics (all writes atomic).

Release layout (SpectralEarth's published loaders and split files use it)::

    <patches>/enmap/<location:07d>/<scene:05d>.tif     int16, 202 bands, reflectance x 10000

Training shards: one ``<patches>/shards/<scene>.npy`` per scene, int16 [n, 202, P, P], written
by curation from the arrays in hand and read with ``np.load(mmap_mode="r")`` (zero-copy random
access, no decoding: 12.6x the GeoTIFF read rate, benchmarks/RESULTS.md), plus
``manifest.parquet`` (patch id, location, scene, time, split, shard, index) built from the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from shapely import wkb

from spectralearth.io import atomic_path
from spectralearth.patches.grid import Registry

REGISTRY_FILE = "registry.sqlite"


def patch_relpath(location_id: int, scene_id: int) -> str:
    return f"enmap/{location_id:07d}/{scene_id:05d}.tif"


def fragment_paths(patches_root: Path, scene: str) -> tuple[Path, Path]:
    """Per-scene index fragment and curation report, merged later by build_index."""
    base = Path(patches_root) / "scenes"
    return base / f"{scene}.parquet", base / f"{scene}.json"


def location_folder(patches_root: Path, location_id: int) -> Path:
    return Path(patches_root) / Path(patch_relpath(location_id, 0)).parent


def with_location_ids(frame: pd.DataFrame, ids: dict[str, int]) -> pd.DataFrame:
    """Set ``location_id``, ``patch_id`` and ``path`` from the registry's current ids.

    Fragments name locations by key; ids are looked up when read because a later scene can
    move a location to another id (see :class:`~spectralearth.patches.grid.Registry`).
    """
    frame = frame.copy()
    if not len(frame):
        for col, dtype in (("location_id", "int64"), ("patch_id", str), ("path", str)):
            frame[col] = pd.Series(dtype=dtype)
        return frame
    missing = sorted(set(frame["location_key"]) - set(ids))
    if missing:
        raise KeyError(f"location keys not in the registry: {missing[:5]}")
    loc = frame["location_key"].map(ids).astype("int64")
    frame["location_id"] = loc
    frame["patch_id"] = [f"{a:07d}/{b:05d}" for a, b in zip(loc, frame["scene_id"], strict=True)]
    frame["path"] = [patch_relpath(a, b) for a, b in zip(loc, frame["scene_id"], strict=True)]
    first = ["patch_id", "location_id", "scene_id", "location_key"]
    return frame[first + [c for c in frame.columns if c not in first]]


def read_fragment(patches_root: str | Path, scene: str, registry: Registry | None = None):
    """One scene's index rows with current location ids and paths."""
    patches_root = Path(patches_root)
    frame = pd.read_parquet(fragment_paths(patches_root, scene)[0])
    registry = registry or Registry(patches_root / REGISTRY_FILE)
    keys = frame["location_key"] if "location_key" in frame.columns else []
    return with_location_ids(frame, registry.location_ids(keys))


def write_patch(path: Path, data: np.ndarray, crs, transform, wavelengths, tags: dict) -> None:
    """Write one patch GeoTIFF (int16, band-interleaved, wavelengths in band tags)."""
    count, h, w = data.shape
    profile = dict(
        driver="GTiff",
        dtype="int16",
        count=count,
        height=h,
        width=w,
        crs=crs,
        transform=transform,
        nodata=-32768,
        interleave="band",
    )
    with atomic_path(path, fsync=False) as tmp:  # the caller flushes once per scene
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data.astype(np.int16, copy=False))
            dst.update_tags(wavelengths=",".join(f"{x:.3f}" for x in wavelengths), **tags)
            for i, wl in enumerate(wavelengths, start=1):
                dst.set_band_description(i, f"{wl:.3f} nm")
                dst.update_tags(i, wavelength=f"{wl:.3f}", wavelength_units="nm")


def assign_split(location_key: str, val_frac: float, test_frac: float) -> str:
    """Deterministic, location-disjoint split from a hash of the location key (stable even
    when a location's id moves)."""
    u = int(hashlib.sha256(str(location_key).encode()).hexdigest()[:8], 16) / 2**32
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "val"
    return "train"


def build_index(patches_root: str | Path, val_frac: float, test_frac: float) -> gpd.GeoDataFrame:
    """Merge the per-scene fragments into ``index.parquet`` (GeoParquet, WGS84 geometry).

    Native footprints differ in CRS between UTM zones, so they are kept as WKT with their
    ``crs`` column; the active geometry is WGS84. Rows are sorted by patch id, so the file
    is the same whatever order the scenes were curated in.
    """
    root = Path(patches_root)
    registry = Registry(root / REGISTRY_FILE)
    with registry.lock():  # no scene moves locations while their ids are read
        registry.apply_moves(lambda loc: location_folder(root, loc))
        frags = sorted((root / "scenes").glob("*.parquet"))
        frames = [read_fragment(root, f.name[: -len(".parquet")], registry) for f in frags]
    frames = [f for f in frames if len(f)]
    if frames:
        df = pd.concat(frames, ignore_index=True)
        df["geometry"] = df["geometry"].map(wkb.loads)
    else:
        df = pd.DataFrame(
            {
                "patch_id": pd.Series(dtype=str),
                "location_id": pd.Series(dtype="int64"),
                "location_key": pd.Series(dtype=str),  # an archive where no window passed
                "geometry": [],
            }
        )
    if df["patch_id"].duplicated().any():
        dup = df.loc[df["patch_id"].duplicated(), "patch_id"].tolist()[:5]
        raise ValueError(f"duplicate patch ids across scene fragments: {dup}")
    df["split"] = [assign_split(x, val_frac, test_frac) for x in df["location_key"]]
    df = df.sort_values("patch_id").reset_index(drop=True)
    gdf = gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326")
    with atomic_path(root / "index.parquet") as tmp:
        gdf.to_parquet(tmp, index=False)
    return gdf


def read_index(patches_root: str | Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(Path(patches_root) / "index.parquet")


def scene_shard_name(scene: str) -> str:
    return f"{scene}.npy"


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf,
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.int16)),
            "fortran_order": False,
            "shape": shape,
        },
    )
    return buf.getvalue()


class _NoPatches(Exception):
    """Internal: a shard stream that received nothing (its temporary file is dropped)."""


@contextlib.contextmanager
def scene_shard_stream(
    path: Path, max_patches: int, on_write: Callable[[int], None] | None = None
) -> Iterator[Callable[[np.ndarray], None]]:
    """Stream one scene's kept patches into its int16 [n, bands, P, P] .npy shard (atomic).

    Yields ``append(patch)``; patches go to disk as they come, so the scene need not be held
    in memory. The header (which holds the count n <= ``max_patches``) is written last, into
    the space reserved for it: the file is byte-identical to ``np.save`` of the stacked
    patches. No patch appended -> no file (an earlier one is removed). ``on_write(fd)`` is
    called after each append (the data handed to the kernel), e.g. ``io.EarlySync.fd`` to
    make the file durable while it grows; the caller still flushes before its commit point.
    """
    path = Path(path)
    count, shape, reserved = 0, None, 0
    try:
        with atomic_path(path, fsync=False) as tmp, open(tmp, "w+b") as fh:

            def append(patch: np.ndarray) -> None:
                nonlocal count, shape, reserved
                if shape is None:
                    shape = patch.shape
                    reserved = len(_npy_header((max(max_patches, 1), *shape)))
                    fh.seek(reserved)
                elif patch.shape != shape:
                    raise ValueError(f"patch shape {patch.shape} differs from {shape}")
                fh.write(np.ascontiguousarray(patch, dtype=np.int16).data)  # one copy at most
                count += 1
                if on_write is not None:
                    fh.flush()
                    on_write(fh.fileno())

            yield append
            if not count:
                raise _NoPatches
            header = _npy_header((count, *shape))
            if len(header) != reserved:  # numpy pads the header for growth: not seen so far
                fh.seek(reserved)
                data = fh.read()
                fh.seek(0)
                fh.truncate()
                fh.write(header)
                fh.write(data)
            else:
                fh.seek(0)
                fh.write(header)
    except _NoPatches:
        path.unlink(missing_ok=True)


def write_scene_shard(path: Path, arrays: list[np.ndarray]) -> None:
    """One scene's kept patches as an int16 [n, bands, P, P] .npy (atomic); none -> no file."""
    with scene_shard_stream(path, len(arrays)) as append:  # the caller flushes once per scene
        for a in arrays:
            append(a)


def build_shards(patches_root: str | Path) -> pd.DataFrame:
    """The shard manifest from the index; removes shard files no index row points to."""
    root = Path(patches_root)
    index = read_index(root)
    out = root / "shards"
    out.mkdir(parents=True, exist_ok=True)
    cols = ["patch_id", "location_id", "scene_id", "datetime", "split", "shard", "index"]
    manifest = (
        index.rename(columns={"shard_index": "index"})[cols].copy()
        if len(index)
        else pd.DataFrame(columns=cols)
    )
    manifest = pd.DataFrame(manifest)  # plain table, no geometry
    with atomic_path(out / "manifest.parquet") as tmp:
        manifest.to_parquet(tmp, index=False)
    referenced = set(manifest["shard"])
    for stale in out.glob("*.npy"):
        if stale.name not in referenced:
            stale.unlink()
    return manifest


def compute_band_stats(patches_root: str | Path, out: str | Path, split: str = "train") -> dict:
    """Per-band mean and std (reflectance x 10000) over the pixels of one split's shards."""
    root = Path(patches_root)
    manifest = pd.read_parquet(root / "shards" / "manifest.parquet")
    sel = manifest[manifest["split"] == split]
    if sel.empty:
        sel = manifest  # tiny archives may have no train location; say so in the file
    total = None
    total_sq = None
    n = 0
    for shard, grp in sel.groupby("shard"):
        arr = np.load(root / "shards" / shard, mmap_mode="r")
        x = np.asarray(arr[np.sort(grp["index"].to_numpy())], dtype=np.float64)
        x = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
        total = x.sum(1) if total is None else total + x.sum(1)
        total_sq = (x**2).sum(1) if total_sq is None else total_sq + (x**2).sum(1)
        n += x.shape[1]
    if n == 0:
        raise ValueError(f"no patches in {root / 'shards'}: cannot compute band statistics")
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 1e-12))
    with rasterio.open(root / read_index(root)["path"].iloc[0]) as src:
        wavelengths = [float(x) for x in src.tags()["wavelengths"].split(",")]
    stats = {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "wavelengths": wavelengths,
        "n_patches": int(len(sel)),
        "n_pixels": int(n),
        "split": split if (manifest["split"] == split).any() else "all",
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(stats))
    return stats
