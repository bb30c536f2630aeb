"""The tables the suites run on, each derived from what is on disk.

========================= ===================== ==============================================
table                     one row per           columns the suites check
========================= ===================== ==============================================
:func:`patch_table`       patch file            read with rasterio: readable, bands, height,
                                                width, dtype, nodata tag, nodata pixels, NaN,
                                                min/max, CRS, pixel size, band means
:func:`index_table`       index row             the index + ``splits_per_location``
:func:`location_table`    location              scenes that saw it, multitemporal (0/1)
:func:`band_drift_table`  band                  dataset mean vs reference mean, in stds
========================= ===================== ==============================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from spectralearth.validation.reference import Reference

NODATA = -32768

PATCH_COLUMNS = [
    "path",
    "readable",
    "error",
    "bands",
    "height",
    "width",
    "dtype",
    "nodata",
    "nodata_pixels",
    "nan_count",
    "min",
    "max",
    "epsg",
    "crs",
    "pixel_size_x",
    "pixel_size_y",
    "band_means",
]


def _patch_row(path: Path) -> dict:
    import rasterio

    row: dict = {c: None for c in PATCH_COLUMNS}
    row["readable"] = False
    try:
        with rasterio.open(path) as src:
            data = src.read()
            crs, transform, nodata = src.crs, src.transform, src.nodata
    except Exception as exc:  # a missing or broken file is a failed row, not a crash
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    bands, height, width = data.shape
    is_nodata = data == NODATA
    if np.issubdtype(data.dtype, np.floating):
        is_nan = np.isnan(data)
        nan_count = int(is_nan.sum())
    else:
        is_nan = np.zeros_like(is_nodata)
        nan_count = 0
    valid = ~(is_nodata | is_nan)
    n_valid = valid.sum(axis=(1, 2))
    sums = np.where(valid, data, 0).sum(axis=(1, 2), dtype=np.float64)
    means = np.divide(sums, n_valid, out=np.full(bands, np.nan), where=n_valid > 0)
    values = data[valid]
    epsg = crs.to_epsg() if crs else None
    row.update(
        readable=True,
        bands=int(bands),
        height=int(height),
        width=int(width),
        dtype=str(data.dtype),
        nodata=None if nodata is None or math.isnan(nodata) else float(nodata),
        nodata_pixels=int(is_nodata.any(axis=0).sum()),
        nan_count=nan_count,
        min=float(values.min()) if values.size else None,
        max=float(values.max()) if values.size else None,
        epsg=epsg,
        crs=f"EPSG:{epsg}" if epsg else (crs.to_string() if crs else None),
        pixel_size_x=float(math.hypot(transform.a, transform.d)),
        pixel_size_y=float(math.hypot(transform.b, transform.e)),
        band_means=[float(x) for x in means],
    )
    return row


def patch_table(
    patches_root: str | os.PathLike, rows: pd.DataFrame | Iterable[str]
) -> pd.DataFrame:
    """One row per patch file with the properties the ``patches`` suite checks.

    ``rows``: index rows (a ``path`` column relative to ``patches_root``; ``patch_id``,
    ``location_id``, ``scene_id`` are carried over) or relative paths. Values are read from
    the files (nodata pixels = pixels with any band at -32768; min/max/band means over the
    valid values), so the table shows what is on disk, not what the index claims.
    """
    root = Path(patches_root)
    if isinstance(rows, pd.DataFrame):
        frame = pd.DataFrame(rows)
        if "path" not in frame.columns:
            if len(frame):
                raise ValueError("patch_table: rows need a 'path' column")
            frame = pd.DataFrame({"path": pd.Series(dtype=str)})  # a scene with no patches
    else:
        frame = pd.DataFrame({"path": list(rows)})
    keep = [c for c in ("patch_id", "location_id", "scene_id") if c in frame.columns]
    records = []
    for rec in frame[["path", *keep]].to_dict("records"):
        row = _patch_row(root / rec["path"])
        row["path"] = str(rec["path"])
        records.append({**{k: rec[k] for k in keep}, **row})
    table = pd.DataFrame(records, columns=[*keep, *PATCH_COLUMNS])
    for col in ("bands", "height", "width", "nodata_pixels", "nan_count", "epsg"):
        table[col] = table[col].astype("Int64")
    for col in ("min", "max", "nodata", "pixel_size_x", "pixel_size_y"):
        table[col] = table[col].astype("float64")
    return table


def index_table(index: pd.DataFrame) -> pd.DataFrame:
    """The index plus ``splits_per_location`` (must be 1: splits are location-disjoint)."""
    table = pd.DataFrame(index.drop(columns=[c for c in ("geometry",) if c in index.columns]))
    if {"location_id", "split"} <= set(table.columns):
        table["splits_per_location"] = (
            table.groupby("location_id", dropna=False)["split"].transform("nunique").astype("Int64")
        )
    return table


def location_table(index: pd.DataFrame) -> pd.DataFrame:
    """One row per location: scenes that saw it and whether it is multitemporal (0/1)."""
    if len(index) == 0:
        return pd.DataFrame(
            {
                "location_id": pd.Series(dtype="int64"),
                "n_scenes": pd.Series(dtype="int64"),
                "multitemporal": pd.Series(dtype="int64"),
            }
        )
    n = index.groupby("location_id")["scene_id"].nunique()
    return pd.DataFrame(
        {
            "location_id": n.index.astype("int64"),
            "n_scenes": n.to_numpy().astype("int64"),
            "multitemporal": (n.to_numpy() > 1).astype("int64"),
        }
    )


def dataset_band_means(index: pd.DataFrame) -> np.ndarray:
    """Per-band mean over all patches (every patch has P x P pixels) from ``band_means``."""
    return np.stack([np.asarray(b, np.float64) for b in index["band_means"]]).mean(axis=0)


def band_drift_table(band_means: np.ndarray, reference: Reference) -> pd.DataFrame:
    """One row per band: dataset mean, reference mean/std and drift in reference stds."""
    band_means = np.asarray(band_means, np.float64)
    if band_means.shape != reference.mean.shape:
        raise ValueError(
            f"{band_means.shape[0]} band means vs {reference.mean.shape[0]} reference bands"
        )
    return pd.DataFrame(
        {
            "band": np.arange(1, band_means.shape[0] + 1),
            "mean": band_means,
            "reference_mean": reference.mean,
            "reference_std": reference.std,
            "drift_sigma": (band_means - reference.mean) / reference.std,
        }
    )
