"""Scene catalogue: every entry of an archive -> one GeoParquet row (footprint in WGS84).

Every entry is opened through :func:`spectralearth.enmap.view.open_view`, the validation
curation and prediction use, so a row says ``ok`` only for a scene curation accepts. A
scene that fails, whatever the exception, is a ``rejected`` row with the reason (naming
the field or layer), so one broken delivery never hides the rest of the archive. Two
processings of one datatake/tile: the newest is ``ok``, older ones ``superseded``. One
product delivered as a folder and as a ``.zip``: the folder is ``ok``, the zip
``duplicate`` (never curated twice).
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Polygon

from spectralearth.enmap.archive import is_twin_preferred, scene_name
from spectralearth.enmap.generic import is_generic_image
from spectralearth.enmap.l2a import PRODUCT_NAME_RE, is_product_entry
from spectralearth.enmap.scene import COVER_FRACTIONS, NODATA, ProductError
from spectralearth.enmap.view import SceneView, open_view
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
    "value_scaling",  # how stored values became reflectance x 10000
    "notes",  # what the reader decided or turned off ("; "-separated)
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


def _mask_fractions(view: SceneView, valid: np.ndarray) -> dict[str, float]:
    """Cover fractions from the QL masks over the valid swath (NaN for a layer the scene
    does not carry)."""
    n_valid = max(int(valid.sum()), 1)
    return {
        col: float((view.mask(layer) & valid).sum() / n_valid) if view.has_mask(layer) else np.nan
        for col, layer in COVER_FRACTIONS.items()
    }


def describe_scene(entry: Path, missing_masks: str = "refuse") -> dict:
    """One catalogue row for an L2A product or a generic image; raises ProductError naming
    it when :func:`~spectralearth.enmap.view.open_view` refuses it."""
    view = open_view(entry, missing_masks=missing_masks)
    scene, meta = view.scene, view.scene.meta
    order = np.argsort(meta.wavelengths)
    first_good = int(np.argmin(meta.bad_bands))  # a band the reader found valid pixels in
    valid = scene.read(bands=np.array([first_good]))[0] != NODATA
    l2a = scene.source == "enmap_l2a"
    names = PRODUCT_NAME_RE.match(scene.name).groupdict() if l2a else {}
    xml_cover = {
        f"{key}_cover_xml": meta.cover.get(f"{key}Cover", np.nan) / 100.0
        for key in ("cloud", "snow", "haze", "cirrus")
    }
    return {
        "scene": scene.name,
        "scene_key": scene.scene_key,
        "datatake": names.get("datatake", ""),
        "tile": names.get("tile", ""),
        "start_time": pd.Timestamp(meta.start_time),
        "stop_time": pd.Timestamp(meta.stop_time or meta.start_time),
        "processor_version": (meta.processor_version or names["version"]) if l2a else "",
        "crs": view.grid.crs.to_string(),
        "transform": list(view.grid.transform)[:6],
        "width": view.grid.width,
        "height": view.grid.height,
        "n_bands": int(len(meta.wavelengths)),
        "wavelengths": meta.wavelengths[order].tolist(),
        "fwhms": meta.fwhms[order].tolist(),
        # declared bad (bandStatistics mean -1000000, bbl) or no valid pixel in the sample
        "bad_bands": meta.band_numbers[meta.bad_bands].tolist(),
        **xml_cover,
        **_mask_fractions(view, valid),
        "nodata_frac": float(1.0 - valid.mean()),
        "value_scaling": scene.scaling.source,
        "notes": "; ".join(view.notes),
        "path": str(Path(entry).absolute()),
        "checksum": _checksum(Path(entry)) if l2a else _file_checksum(Path(entry)),
        "source": scene.source,
        "status": "ok",
        "reason": "",
        "geometry": Polygon(meta.footprint_lonlat),
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


def build_catalog(
    archive: str | Path, out: str | Path | None = None, missing_masks: str = "refuse"
) -> CatalogResult:
    """Catalogue every entry of ``archive``; write GeoParquet to ``out`` (atomically) if given.

    Entries are L2A products (folder or .zip) or generic images with band wavelengths;
    anything else, or anything :func:`~spectralearth.enmap.view.open_view` refuses (with
    ``missing_masks`` as curation will use it), becomes a rejected row with the reason.
    Statuses: ``ok``, ``rejected``, ``superseded`` (a newer processing of the datatake/tile
    is ok), ``duplicate`` (the same product as a folder and a .zip: the folder is ok).
    """
    archive = Path(archive)
    if not archive.is_dir():
        raise FileNotFoundError(f"archive folder not found: {archive}")
    rows = []
    root = archive.resolve()
    for entry in sorted(archive.iterdir()):
        if entry.name.startswith(".") or _is_sidecar(entry):
            continue
        try:
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise ProductError(entry.name, "is a link that leaves the archive folder")
            if not (is_product_entry(entry) or is_generic_image(entry)):
                raise ProductError(
                    entry.name,
                    "not an EnMAP L2A product folder or .zip, nor an image with band wavelengths",
                )
            rows.append(describe_scene(entry, missing_masks))
        except ProductError as exc:
            rows.append(_rejected_row(entry, exc.reason))
        except Exception as exc:  # whatever breaks, only this entry is rejected
            rows.append(_rejected_row(entry, f"{type(exc).__name__}: {exc}"))
    df = pd.DataFrame(rows, columns=CATALOG_COLUMNS)
    _mark_duplicates(df)
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


def _mark_duplicates(df: pd.DataFrame) -> None:
    """Of ok rows that are one product (folder and zip twins), keep the preferred entry."""
    ok = df[df["status"] == "ok"]
    for _, group in ok.groupby("scene"):
        if len(group) < 2:
            continue
        paths = {i: Path(p) for i, p in group["path"].items()}
        keep = next(i for i in paths if all(is_twin_preferred(paths[i], paths[j]) for j in paths))
        for i in paths:
            if i != keep:
                df.loc[i, "status"] = "duplicate"
                df.loc[i, "reason"] = (
                    f"the same product as {paths[keep].name} (folder and .zip of one product): "
                    "catalogued and curated once, from that entry"
                )


def _rejected_row(entry: Path, reason: str) -> dict:
    row = {c: None for c in CATALOG_COLUMNS}
    try:
        name = scene_name(entry) if is_product_entry(entry) or is_generic_image(entry) else None
    except OSError:  # unreadable entry: its file name is all we know
        name = None
    row.update(
        scene=name or entry.name,
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
