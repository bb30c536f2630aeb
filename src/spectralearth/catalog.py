"""Scene catalogue: every product of an archive -> one GeoParquet row (footprint in WGS84).

Rows of products that cannot be read are kept with ``status="rejected"`` and the reason, so
one broken delivery never hides the rest of the archive.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from spectralearth.enmap.generic import is_generic_image, open_generic
from spectralearth.enmap.product import (
    PRODUCT_NAME_RE,
    QL_LAYERS,
    ProductError,
    is_product_entry,
    open_product,
    scene_name,
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
    "bad_bands",
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
    "source",
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


def _checksum(product_path: Path) -> str:
    """Cheap content fingerprint: names, sizes and the XML bytes (images are not re-read)."""
    h = hashlib.sha256()
    if product_path.is_file():  # a zip: its size and its member table
        h.update(str(product_path.stat().st_size).encode())
        with zipfile.ZipFile(product_path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                h.update(f"{info.filename}:{info.file_size}:{info.CRC}".encode())
        return h.hexdigest()[:16]
    for f in sorted(product_path.iterdir()):
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        if f.name.upper().endswith(".XML"):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _check_complete(product) -> None:
    """Read the last block of the last band: a truncated TIFF fails here, not mid-curation."""
    with rasterio.open(product.image_path) as src:
        bh, bw = src.block_shapes[0]
        row = ((src.height - 1) // bh) * bh
        col = ((src.width - 1) // bw) * bw
        window = Window(col, row, min(bw, src.width - col), min(bh, src.height - row))
        try:
            src.read(src.count, window=window)
        except rasterio.errors.RasterioIOError as exc:
            raise ProductError(
                product.name, f"SPECTRAL_IMAGE is truncated or corrupt: {exc}"
            ) from exc


def _empty_bands(product) -> np.ndarray:
    """Bands with no valid pixel on a ~64 x 64 nearest-neighbour sample of the image (exact
    for bands the processor left empty; a band valid only in a few pixels could be missed)."""
    with rasterio.open(product.image_path) as src:
        step = max(1, min(src.height, src.width) // 64)
        shape = (src.count, max(1, src.height // step), max(1, src.width // step))
        sample = src.read(out_shape=shape, resampling=Resampling.nearest)
    return np.all(sample == -32768, axis=(1, 2))


def _footprint_check(product, footprint: Polygon, crs, bounds) -> None:
    """The XML footprint must overlap the raster, or one of them is wrong."""
    to_native = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform
    native = shapely.transform(footprint, to_native, interleaved=False)
    if not native.intersects(box(*bounds)):
        raise ProductError(
            product.name, "METADATA.XML footprint does not intersect the image's extent"
        )


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


def _raster_fields(prof: dict, meta) -> dict:
    """Grid and band columns shared by L2A products and generic images (bands sorted)."""
    order = np.argsort(meta.wavelengths)
    return {
        "crs": prof["crs"].to_string(),
        "transform": list(prof["transform"])[:6],
        "width": int(prof["width"]),
        "height": int(prof["height"]),
        "n_bands": int(len(meta.wavelengths)),
        "wavelengths": meta.wavelengths[order].tolist(),
        "fwhms": meta.fwhms[order].tolist(),
    }


def describe_product(product_dir: Path) -> dict:
    """One catalogue row for a product; raises ProductError naming it when it can't be read."""
    product = open_product(product_dir)
    _check_complete(product)
    missing = [q for q in QL_LAYERS if q not in product.ql_paths]
    if missing:
        raise ProductError(product.name, f"quality layers missing: {', '.join(missing)}")
    prof = product.profile()
    if prof.get("crs") is None:
        raise ProductError(product.name, "SPECTRAL_IMAGE has no CRS")
    meta = product.meta
    footprint = Polygon(meta.footprint_lonlat)
    if not footprint.is_valid or footprint.area == 0:
        raise ProductError(product.name, "METADATA.XML bounding polygon is not a valid polygon")
    with rasterio.open(product.image_path) as src:
        bounds = src.bounds
    _footprint_check(product, footprint, prof["crs"], bounds)
    names = PRODUCT_NAME_RE.match(product.name).groupdict()
    row = {
        "scene": product.name,
        "scene_key": product.scene_key,
        "datatake": names["datatake"],
        "tile": names["tile"],
        "start_time": pd.Timestamp(meta.start_time),
        "stop_time": pd.Timestamp(meta.stop_time),
        "processor_version": meta.processor_version or names["version"],
        **_raster_fields(prof, meta),
        "cloud_cover_xml": meta.cover.get("cloudCover", np.nan) / 100.0,
        "snow_cover_xml": meta.cover.get("snowCover", np.nan) / 100.0,
        "haze_cover_xml": meta.cover.get("hazeCover", np.nan) / 100.0,
        "cirrus_cover_xml": meta.cover.get("cirrusCover", np.nan) / 100.0,
        "path": str(Path(product_dir).absolute()),
        "checksum": _checksum(product_dir),
        "status": "ok",
        "reason": "",
        # bad: bandStatistics mean -1000000 in the XML, or no valid pixel at all
        "bad_bands": meta.band_numbers[meta.bad_bands | _empty_bands(product)].tolist(),
        "source": "enmap_l2a",
        "geometry": footprint,
    }
    row.update(_mask_fractions(product))
    return row


def describe_generic(path: Path) -> dict:
    """Catalogue row for a generic image (GeoTIFF/ENVI with band wavelengths): no QL masks,
    so the cover fractions are unknown (NaN); the time must come from its tags/header."""
    scene = open_generic(path)
    meta = scene.meta
    if meta.start_time is None:
        raise ProductError(
            scene.name, "no acquisition time in the image's tags or header (add start_time)"
        )
    prof = scene.profile()
    raw_first = scene.read(bands=np.array([int(np.argmin(meta.bad_bands))]))[0]
    nan = float("nan")
    footprint = Polygon(meta.footprint_lonlat)
    return {
        "scene": scene.name,
        "scene_key": scene.scene_key,
        "datatake": "",
        "tile": "",
        "start_time": pd.Timestamp(meta.start_time),
        "stop_time": pd.Timestamp(meta.stop_time or meta.start_time),
        "processor_version": "",
        **_raster_fields(prof, meta),
        "bad_bands": (np.flatnonzero(meta.bad_bands) + 1).tolist(),
        **dict.fromkeys(
            ["cloud_cover_xml", "snow_cover_xml", "haze_cover_xml", "cirrus_cover_xml"], nan
        ),
        **dict.fromkeys(
            ["cloud_frac", "snow_frac", "haze_frac", "cloudshadow_frac", "cirrus_frac"], nan
        ),
        "nodata_frac": float((raw_first == -32768).mean()),
        "path": str(Path(path).absolute()),
        "checksum": _file_checksum(Path(path)),
        "source": "generic",
        "status": "ok",
        "reason": "",
        "geometry": footprint,
    }


def _file_checksum(path: Path) -> str:
    h = hashlib.sha256(f"{path.name}:{path.stat().st_size}".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 16))  # header and first tags: cheap, catches rewrites
    return h.hexdigest()[:16]


def _is_sidecar(entry: Path) -> bool:
    """Files that belong to another entry (ENVI headers, GDAL .aux.xml, world files)."""
    low = entry.name.lower()
    return entry.is_file() and low.endswith((".hdr", ".aux.xml", ".ovr", ".tfw", ".prj"))


def build_catalog(archive: str | Path, out: str | Path | None = None) -> CatalogResult:
    """Catalogue every entry of ``archive``; write GeoParquet to ``out`` (atomically) if given.

    Entries are L2A products (folder or .zip) or generic images with band wavelengths;
    anything else, or anything that fails to open, becomes a rejected row.
    Two processings of the same datatake/tile: the newest processing is ``ok`` and older
    ones are ``superseded``.
    """
    archive = Path(archive)
    if not archive.is_dir():
        raise FileNotFoundError(f"archive folder not found: {archive}")
    rows = []
    root = archive.resolve()
    for entry in sorted(archive.iterdir()):
        if entry.name.startswith("."):
            continue
        try:
            if _is_sidecar(entry):
                continue
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise ProductError(entry.name, "is a link that leaves the archive folder")
            if is_product_entry(entry):
                rows.append(describe_product(entry))
            elif is_generic_image(entry):
                rows.append(describe_generic(entry))
            else:
                raise ProductError(
                    entry.name,
                    "not an EnMAP L2A product folder or .zip, nor an image with band wavelengths",
                )
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
    row.update(
        scene=scene_name(entry)
        if is_product_entry(entry) or is_generic_image(entry)
        else entry.name,
        path=str(entry.absolute()),
        status="rejected",
        reason=reason,
    )
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
