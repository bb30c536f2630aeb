"""Scene catalogue: every product of an archive -> one GeoParquet row (footprint in WGS84).

Rows of products that cannot be read are kept with ``status="rejected"`` and the reason, so
one broken delivery never hides the rest of the archive.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Polygon

from spectralearth.enmap.product import (
    PRODUCT_NAME_RE,
    QL_LAYERS,
    ProductError,
    open_product,
)
from spectralearth.io import atomic_path

CATALOG_COLUMNS = [
    "scene",  # product name (also the Dagster partition key)
    "scene_key",
    "datatake",
    "tile",
    "start_time",
    "stop_time",
    "processor_version",
    "crs",
    "transform",
    "width",
    "height",
    "n_bands",
    "wavelengths",
    "fwhms",
    "cloud_cover_xml",
    "snow_cover_xml",
    "haze_cover_xml",
    "cirrus_cover_xml",
    "cloud_frac",
    "snow_frac",
    "haze_frac",
    "cloudshadow_frac",
    "cirrus_frac",
    "nodata_frac",
    "path",
    "checksum",
    "status",
    "reason",
    "geometry",
]


@dataclass
class CatalogResult:
    catalog: gpd.GeoDataFrame
    path: Path | None

    @property
    def n_ok(self) -> int:
        return int((self.catalog["status"] == "ok").sum())

    @property
    def rejected(self) -> pd.DataFrame:
        return self.catalog[self.catalog["status"] == "rejected"][["scene", "reason"]]


def _checksum(product_dir: Path) -> str:
    """Cheap content fingerprint: names, sizes and the XML bytes (images are not re-read)."""
    h = hashlib.sha256()
    for f in sorted(product_dir.iterdir()):
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        if f.name.upper().endswith(".XML"):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _mask_fractions(product) -> dict[str, float]:
    """Cover fractions from the QL masks and the nodata fraction, over the valid swath."""
    raw_first = product.read(bands=np.array([0]))[0]
    valid = raw_first != -32768
    n_valid = max(int(valid.sum()), 1)
    out = {"nodata_frac": float(1.0 - valid.mean())}
    names = {
        "QL_QUALITY_CLOUD": "cloud_frac",
        "QL_QUALITY_SNOW": "snow_frac",
        "QL_QUALITY_HAZE": "haze_frac",
        "QL_QUALITY_CLOUDSHADOW": "cloudshadow_frac",
        "QL_QUALITY_CIRRUS": "cirrus_frac",
    }
    for layer, col in names.items():
        if layer in product.ql_paths:
            out[col] = float((product.read_mask(layer) & valid).sum() / n_valid)
        else:
            out[col] = float("nan")
    return out


def describe_product(product_dir: Path) -> dict:
    """One catalogue row for a product; raises ProductError naming it when it can't be read."""
    product = open_product(product_dir)
    missing = [q for q in QL_LAYERS if q not in product.ql_paths]
    if missing:
        raise ProductError(product.name, f"quality layers missing: {', '.join(missing)}")
    prof = product.profile()
    if prof.get("crs") is None:
        raise ProductError(product.name, "SPECTRAL_IMAGE has no CRS")
    meta = product.meta
    order = np.argsort(meta.wavelengths)
    names = PRODUCT_NAME_RE.match(product.name).groupdict()
    row = {
        "scene": product.name,
        "scene_key": product.scene_key,
        "datatake": names["datatake"],
        "tile": names["tile"],
        "start_time": pd.Timestamp(meta.start_time),
        "stop_time": pd.Timestamp(meta.stop_time),
        "processor_version": meta.processor_version or names["version"],
        "crs": prof["crs"].to_string(),
        "transform": list(prof["transform"])[:6],
        "width": int(prof["width"]),
        "height": int(prof["height"]),
        "n_bands": int(len(meta.wavelengths)),
        "wavelengths": meta.wavelengths[order].tolist(),
        "fwhms": meta.fwhms[order].tolist(),
        "cloud_cover_xml": meta.cover.get("cloudCover", np.nan) / 100.0,
        "snow_cover_xml": meta.cover.get("snowCover", np.nan) / 100.0,
        "haze_cover_xml": meta.cover.get("hazeCover", np.nan) / 100.0,
        "cirrus_cover_xml": meta.cover.get("cirrusCover", np.nan) / 100.0,
        "path": str(product_dir.resolve()),
        "checksum": _checksum(product_dir),
        "status": "ok",
        "reason": "",
        "geometry": Polygon(meta.footprint_lonlat),
    }
    row.update(_mask_fractions(product))
    return row


def build_catalog(archive: str | Path, out: str | Path | None = None) -> CatalogResult:
    """Catalogue every entry of ``archive``; write GeoParquet to ``out`` (atomically) if given.

    Entries that are not L2A product folders, or that fail to open, become rejected rows.
    Two processings of the same datatake/tile: the newest processing is ``ok`` and older
    ones are ``superseded``.
    """
    archive = Path(archive)
    if not archive.is_dir():
        raise FileNotFoundError(f"archive folder not found: {archive}")
    rows = []
    for entry in sorted(archive.iterdir()):
        if entry.name.startswith("."):
            continue
        try:
            if not PRODUCT_NAME_RE.match(entry.name):
                raise ProductError(entry.name, "not an EnMAP L2A product name")
            rows.append(describe_product(entry))
        except ProductError as exc:
            rows.append(_rejected_row(entry, exc.reason))
        except Exception as exc:  # a broken file must not stop the archive
            rows.append(_rejected_row(entry, f"{type(exc).__name__}: {exc}"))
    df = pd.DataFrame(rows, columns=CATALOG_COLUMNS)
    ok = df["status"] == "ok"
    if ok.any():
        newest = df[ok].sort_values("scene").groupby("scene_key")["scene"].transform("last")
        superseded = df[ok].index[df.loc[ok, "scene"] != newest]
        df.loc[superseded, "status"] = "superseded"
        df.loc[superseded, "reason"] = "a newer processing of this datatake/tile exists"
    gdf = gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326")
    path = None
    if out is not None:
        path = Path(out)
        with atomic_path(path) as tmp:
            gdf.to_parquet(tmp, index=False)
    return CatalogResult(gdf, path)


def _rejected_row(entry: Path, reason: str) -> dict:
    row = {c: None for c in CATALOG_COLUMNS}
    row.update(scene=entry.name, path=str(entry.resolve()), status="rejected", reason=reason)
    return row


def read_catalog(path: str | Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(path)


def ok_scenes(catalog: gpd.GeoDataFrame) -> list[str]:
    """Names of the products that curation should process."""
    return sorted(catalog.loc[catalog["status"] == "ok", "scene"].tolist())


def summary(catalog: gpd.GeoDataFrame) -> dict:
    counts = catalog["status"].value_counts().to_dict()
    return {"products": int(len(catalog)), **{k: int(v) for k, v in counts.items()}}


def to_json_lines(catalog: gpd.GeoDataFrame) -> str:
    cols = ["scene", "status", "start_time", "cloud_frac", "reason"]
    return json.dumps(catalog[cols].astype(str).to_dict(orient="records"), indent=1)
