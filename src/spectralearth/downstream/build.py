"""Build a registered downstream dataset from curated patches and a label source.

A label source is either

* a **raster** (:class:`RasterLabelSource`: CDL, NLCD, TreeMap, BNETD, CORINE; one file or
  several tiles, any CRS and pixel grid), reprojected onto each patch grid with
  ``rasterio.warp.reproject`` and nearest-neighbour resampling, or
* **polygons** (:class:`VectorLabelSource`: EuroCrops, BD Forêt; any file geopandas reads,
  any CRS), reprojected to the patch CRS with geopandas and burnt in with
  ``rasterio.features.rasterize`` (a pixel takes the code of the polygon holding its
  centre; where polygons overlap, the later one wins).

:func:`build_dataset` writes the released layout that
:class:`~spectralearth.downstream.datasets.base.ReleasedDataset` reads::

    <out>/<dataset>/<sensor_dir>/<location:07d>/<scene:05d>.tif   image (EnMAP: link/copy)
    <out>/<dataset>/<label_dir>/<location:07d>/<scene:05d>.tif    source codes, 0 = none
    <out>/<dataset>/splits/{train,val,test}.txt                   the chosen scheme
    <out>/<dataset>/splits/<scheme>/{train,val,test}.txt           every scheme
    <out>/<dataset>/build.json                                    counts and settings

Label rasters hold the source's own codes (the dataset's registry entry maps them to
classes); codes that do not fit the dataset's label type and pixels the source leaves
unlabelled are 0, which no dataset keeps. A patch is left out, and counted, when the source
does not cover it (less than ``min_coverage`` of its pixel centres inside the source's
footprint: the rasters' extent, or the polygons' ``extent``) or when none of its pixels
holds a code the dataset keeps.

Images for DESIS and Hyperion datasets are the patches' own when they already have that
sensor's band count; 202-band EnMAP patches are resampled to the sensor's band table
(:func:`spectralearth.bands.sensor_bands`) with Gaussian SRFs — the way the embedded
synthetic default makes its DESIS and Hyperion versions (an approximation: same pixels and
dates, another band set; see :func:`sensor_matrix`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.warp import transform as warp_transform

from spectralearth.downstream.datasets.base import DatasetCard, get_card
from spectralearth.downstream.datasets.synth_landcover import _link_or_copy, relative_name
from spectralearth.downstream.splits import (
    DEFAULT_TEST_FRAC,
    DEFAULT_VAL_FRAC,
    SCHEMES,
    assign_splits,
    write_split_files,
)
from spectralearth.io import atomic_path, atomic_write_text


@dataclass(frozen=True)
class PatchGrid:
    """One curated patch: its release name, image file and pixel grid."""

    name: str  # <location:07d>/<scene:05d>.tif
    location_id: int
    scene_id: int
    path: Path
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int = 0

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        x0, y0 = self.transform * (0, 0)
        x1, y1 = self.transform * (self.width, self.height)
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates (x, y) of every pixel centre, each ``[height, width]``."""
        rows, cols = np.mgrid[0 : self.height, 0 : self.width] + 0.5
        t = self.transform
        return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f


def read_patch_grids(patches_root: str | os.PathLike) -> list[PatchGrid]:
    """Every patch of ``<patches_root>/index.parquet`` with its grid (read from the file)."""
    root = Path(patches_root)
    index = pd.read_parquet(root / "index.parquet", columns=["location_id", "scene_id", "path"])
    grids = []
    for row in index.sort_values(["location_id", "scene_id"]).itertuples(index=False):
        path = root / row.path
        with rasterio.open(path) as src:
            grids.append(
                PatchGrid(
                    relative_name(row.location_id, row.scene_id),
                    int(row.location_id),
                    int(row.scene_id),
                    path,
                    src.crs,
                    src.transform,
                    src.width,
                    src.height,
                    src.count,
                )
            )
    return grids


def _as_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in (".tif", ".tiff", ".vrt"))
        else:
            out.append(p)
    if not out:
        raise FileNotFoundError(f"no label raster in {paths}")
    return out


class RasterLabelSource:
    """Label codes from one or several rasters (tiles), any CRS and grid.

    ``remap`` maps raw raster values to source codes first (e.g. a CORINE GeoTIFF's grid
    codes 1..44 to CLC codes 111..523, or TreeMap plot ids to forest types); values it does
    not name become 0. Pixels equal to the raster's nodata value are unlabelled but covered.
    """

    kind = "raster"

    def __init__(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        remap: Mapping[int, int] | None = None,
        band: int = 1,
    ):
        self.paths = _as_paths(paths)
        for p in self.paths:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such label raster")
        self.remap = dict(remap) if remap else None
        self.band = band
        self._meta: dict[Path, tuple[CRS, tuple[float, float, float, float]]] = {}
        for p in self.paths:
            with rasterio.open(p) as src:
                if src.crs is None:
                    raise ValueError(f"{p}: label raster has no CRS")
                self._meta[p] = (src.crs, tuple(src.bounds))

    def __repr__(self) -> str:
        return f"RasterLabelSource({len(self.paths)} file(s): {self.paths[0]}...)"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "files": [str(p) for p in self.paths], "remap": bool(self.remap)}

    def labels(self, grid: PatchGrid) -> tuple[np.ndarray, np.ndarray]:
        """``(codes int64 [H, W], covered bool [H, W])`` on the patch grid."""
        shape = (grid.height, grid.width)
        codes = np.zeros(shape, dtype=np.int64)
        filled = np.zeros(shape, dtype=bool)
        covered = np.zeros(shape, dtype=bool)
        xs = ys = None
        for path in self.paths:
            crs, (left, bottom, right, top) = self._meta[path]
            gl, gb, gr, gt = transform_bounds(grid.crs, crs, *grid.bounds, densify_pts=21)
            if gr <= left or gl >= right or gt <= bottom or gb >= top:
                continue
            # footprint: pixel centres that fall inside this raster's extent
            if xs is None:
                xs, ys = grid.centres()
            sx, sy = warp_transform(grid.crs, crs, xs.ravel().tolist(), ys.ravel().tolist())
            sx, sy = np.asarray(sx).reshape(shape), np.asarray(sy).reshape(shape)
            inside = (sx > left) & (sx < right) & (sy > bottom) & (sy < top)
            covered |= inside
            dst = np.full(shape, np.nan, dtype=np.float64)
            with rasterio.open(path) as src:
                reproject(
                    source=rasterio.band(src, self.band),
                    destination=dst,
                    dst_transform=grid.transform,
                    dst_crs=grid.crs,
                    dst_nodata=np.nan,
                    resampling=Resampling.nearest,
                )
            new = ~np.isnan(dst) & ~filled & inside
            if new.any():
                raw = dst[new].astype(np.int64)
                if self.remap is not None:
                    raw = np.array([self.remap.get(int(v), 0) for v in raw], dtype=np.int64)
                codes[new] = raw
                filled |= new
            if filled.all():
                break
        return codes, covered


class VectorLabelSource:
    """Label codes from polygons with a code column (any CRS geopandas can read).

    ``extent`` is the area the layer was surveyed over (a shapely geometry in the layer's
    CRS): pixel centres outside it are "not covered". Without it, a patch is covered when
    it meets the layer's bounding box (and then wholly: a gap between polygons is
    unlabelled, not uncovered), else not covered at all.
    """

    kind = "vector"

    def __init__(self, frame, column: str, extent=None):
        import geopandas as gpd
        from shapely.geometry import box

        if not isinstance(frame, gpd.GeoDataFrame):
            path = Path(frame)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such vector label file")
            frame = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
            self.path = str(path)
        else:
            self.path = "<GeoDataFrame>"
        if frame.crs is None:
            raise ValueError(f"{self.path}: polygons have no CRS")
        if column not in frame.columns:
            raise KeyError(f"{self.path}: no column {column!r}; have {list(frame.columns)}")
        codes = pd.to_numeric(frame[column], errors="coerce")
        keep = codes.notna() & frame.geometry.notna() & ~frame.geometry.is_empty
        self.frame = gpd.GeoDataFrame(
            {"code": codes[keep].astype(np.int64).to_numpy()},
            geometry=frame.geometry[keep].to_numpy(),
            crs=frame.crs,
        )
        self.column = column
        self.explicit_extent = extent is not None
        self.extent = gpd.GeoSeries(
            [extent if extent is not None else box(*self.frame.total_bounds)], crs=frame.crs
        )
        self._by_crs: dict[str, tuple[Any, Any]] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.path,
            "column": self.column,
            "polygons": len(self.frame),
        }

    def _in(self, crs: CRS):
        key = crs.to_wkt()
        if key not in self._by_crs:
            self._by_crs[key] = (self.frame.to_crs(crs), self.extent.to_crs(crs).iloc[0])
        return self._by_crs[key]

    def labels(self, grid: PatchGrid) -> tuple[np.ndarray, np.ndarray]:
        import shapely
        from rasterio.features import rasterize
        from shapely.geometry import box

        frame, extent = self._in(grid.crs)
        shape = (grid.height, grid.width)
        if self.explicit_extent:
            covered = shapely.contains_xy(extent, *grid.centres())
        else:
            covered = np.full(shape, extent.intersects(box(*grid.bounds)))
        hits = frame.sindex.query(box(*grid.bounds), predicate="intersects")
        if not len(hits):
            return np.zeros(shape, dtype=np.int64), covered
        sub = frame.iloc[np.sort(hits)]
        burnt = rasterize(
            zip(sub.geometry, sub["code"].astype(np.float64), strict=True),
            out_shape=shape,
            transform=grid.transform,
            fill=np.nan,
            dtype="float64",
        )
        codes = np.where(np.isnan(burnt), 0, burnt).astype(np.int64)
        return codes, covered


def label_dtype(info: DatasetCard) -> str:
    """Smallest unsigned type holding every code the dataset keeps (EuroCrops: uint32)."""
    top = max(info.codes)
    for dtype in ("uint8", "uint16", "uint32"):
        if top <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"{info.name}: codes up to {top} do not fit uint32")


def sensor_matrix(source_wavelengths: np.ndarray, sensor: str) -> np.ndarray:
    """Linear map ``[n_sensor, n_source]`` from EnMAP view spectra to a sensor's bands.

    Source spectra are linearly interpolated onto a 1 nm grid (held constant beyond their
    ends, e.g. DESIS's 400-418 nm), where EnMAP's removed water-vapour ranges are darkened
    by the synthetic archive's residual-absorption model (L2A reflectance is near zero
    there), then integrated with each target band's Gaussian SRF. An approximation of what
    the sensor would have seen, not a radiative-transfer simulation.
    """
    from spectralearth.bands import gaussian_srf_matrix, in_water_vapour, sensor_bands
    from spectralearth.synth.scene import absorption_depth

    src = np.asarray(source_wavelengths, dtype=float)
    table = sensor_bands(sensor)
    lo = min(src.min(), (table.wavelengths - 3 * table.fwhms).min())
    hi = max(src.max(), (table.wavelengths + 3 * table.fwhms).max())
    grid = np.arange(np.floor(lo), np.ceil(hi) + 1.0, 1.0)
    # interpolation weights grid <- source (np.interp of the identity, column by column)
    order = np.argsort(src)
    interp = np.stack([np.interp(grid, src[order], np.eye(len(src))[i]) for i in order], axis=1)
    gap = in_water_vapour(grid)
    interp[gap] *= (1.0 - absorption_depth(grid[gap]))[:, None]
    srf = gaussian_srf_matrix(grid, table.wavelengths, table.fwhms)
    return srf @ interp[:, np.argsort(order)]


def _patch_wavelengths(src) -> np.ndarray:
    tag = src.tags().get("wavelengths")
    if tag:
        return np.array([float(x) for x in tag.split(",")])
    from spectralearth.bands import view_wavelengths

    if src.count == len(view_wavelengths()):
        return view_wavelengths()
    raise ValueError(f"{src.name}: no wavelength tags to resample from")


def _write_resampled(grid: PatchGrid, sensor: str, dst_path: Path, cache: dict) -> None:
    from spectralearth.bands import sensor_bands

    with rasterio.open(grid.path) as src:
        data = src.read().astype(np.float32)
        wl = _patch_wavelengths(src)
        profile = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "crs": src.crs,
            "transform": src.transform,
            "nodata": src.nodata,
        }
    key = (sensor, tuple(np.round(wl, 3)))
    if key not in cache:
        cache[key] = sensor_matrix(wl, sensor).astype(np.float32)
    m = cache[key]
    out = np.tensordot(m, data, axes=(1, 0))
    out = np.clip(np.rint(out), -32767, 32767).astype(np.int16)
    table = sensor_bands(sensor)
    with atomic_path(dst_path) as tmp:
        with rasterio.open(
            tmp, "w", count=len(m), dtype="int16", interleave="band", compress="deflate", **profile
        ) as dst:
            dst.write(out)
            dst.update_tags(
                wavelengths=",".join(f"{x:.3f}" for x in table.wavelengths),
                sensor=sensor,
                resampled_from="EnMAP 202-band view (Gaussian SRFs; spectralearth.downstream.build)",
            )


def build_dataset(
    name: str | DatasetCard,
    patches_root: str | os.PathLike,
    source: RasterLabelSource | VectorLabelSource,
    out_root: str | os.PathLike,
    min_coverage: float = 1.0,
    scheme: str = "random",
    val_frac: float = DEFAULT_VAL_FRAC,
    test_frac: float = DEFAULT_TEST_FRAC,
    seed: int = 0,
    block_m: float | None = None,
    grids: Sequence[PatchGrid] | None = None,
    resample_sensor: bool = True,
) -> dict[str, Any]:
    """Write ``<out_root>/<name>/`` (layout in the module doc) and return counts.

    ``scheme`` picks the split written to ``splits/`` (``random``: the paper's; ``block``,
    ``scene``: spatially blocked); all schemes go to ``splits/<scheme>/``.
    """
    info = get_card(name) if isinstance(name, str) else name
    if scheme not in SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; have {SCHEMES}")
    grids = list(grids) if grids is not None else read_patch_grids(patches_root)
    root = Path(out_root) / info.name
    dtype = label_dtype(info)
    top = np.iinfo(dtype).max
    keep_codes = np.array(sorted(info.class_of_code()), dtype=np.int64)
    not_covered, no_labels, kept = [], [], []
    class_pixels = np.zeros(info.num_classes, dtype=np.int64)
    linked = copied = resampled = 0
    matrices: dict = {}
    for g in grids:
        codes, covered = source.labels(g)
        if covered.mean() < min_coverage or not covered.any():
            not_covered.append(g.name)
            continue
        codes = np.where(covered & (codes >= 0) & (codes <= top), codes, 0)
        if not np.isin(codes, keep_codes).any():
            no_labels.append(g.name)
            continue
        cls = info.encode(codes)
        class_pixels += np.bincount(cls[cls >= 0], minlength=info.num_classes)[: info.num_classes]
        with atomic_path(root / info.label_dir / g.name) as tmp:
            with rasterio.open(
                tmp,
                "w",
                driver="GTiff",
                width=g.width,
                height=g.height,
                count=1,
                dtype=dtype,
                crs=g.crs,
                transform=g.transform,
                nodata=0,
                compress="deflate",
            ) as dst:
                dst.write(codes.astype(dtype), 1)
                dst.update_tags(label_source=info.label_source, dataset=info.name)
        image_dst = root / info.sensor_dir / g.name
        if g.count == info.bands or not g.count:
            if _link_or_copy(g.path, image_dst) == "link":
                linked += 1
            else:
                copied += 1
        elif info.sensor != "EnMAP" and resample_sensor:
            _write_resampled(g, info.sensor, image_dst, matrices)
            resampled += 1
        else:
            raise ValueError(
                f"{g.path}: {g.count} bands, {info.name} ({info.sensor}) needs {info.bands}"
            )
        kept.append(g)

    if not kept:
        raise ValueError(
            f"{info.name}: no patch kept ({len(not_covered)} not covered by the label source, "
            f"{len(no_labels)} without a kept code)"
        )
    frame = pd.DataFrame(
        {
            "name": [g.name for g in kept],
            "location_id": [g.location_id for g in kept],
            "scene_id": [g.scene_id for g in kept],
            "crs": [g.crs.to_string() for g in kept],
            "x": [g.bounds[0] for g in kept],
            "y": [g.bounds[3] for g in kept],
            "size_m": [abs(g.transform.a) * g.width for g in kept],
        }
    )
    split_counts = {}
    for s in SCHEMES:
        splits = assign_splits(frame, s, val_frac, test_frac, seed, block_m)
        split_counts[s] = write_split_files(root, frame["name"], splits, sub=s)
        if s == scheme:
            write_split_files(root, frame["name"], splits)
    report = {
        "dataset": info.name,
        "out_dir": str(root),
        "source": source.describe(),
        "patches": len(grids),
        "kept": len(kept),
        "not_covered": len(not_covered),
        "not_covered_patches": not_covered[:50],
        "no_labels": len(no_labels),
        "no_labels_patches": no_labels[:50],
        "min_coverage": min_coverage,
        "class_pixels": {n: int(c) for n, c in zip(info.class_names, class_pixels, strict=True)},
        "split_scheme": scheme,
        "splits": split_counts[scheme],
        "splits_by_scheme": split_counts,
        "seed": seed,
        "linked": linked,
        "copied": copied,
        "resampled": resampled,
    }
    atomic_write_text(root / "build.json", json.dumps(report, indent=1))
    return report
