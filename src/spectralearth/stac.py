"""STAC export of the scene catalogue: one self-contained Collection, one Item per product.

Layout written by :func:`write_stac`::

    out_dir/collection.json
    out_dir/<scene>/<scene>.json        one Item per catalogue row that is not rejected

Links inside the folder are relative (``CatalogType.SELF_CONTAINED``), so the folder can be
moved or published as is; asset hrefs point at the product files (absolute paths, since the
archive lives outside the STAC folder; ``/vsizip/...`` GDAL paths for zipped products).

Band metadata (``eo:bands``, ``raster:bands``) follows the *file* band order of the image,
taken from the scene itself (``open_scene``: METADATA.XML order = image band order)
together with the gains/offsets, data type and nodata its reader applies to the stored values
(``scene.scaling``). The catalogue's ``wavelengths``/``fwhms`` columns are
sorted by wavelength, which is not the file order for every L2A processor
(VNIR-then-SWIR products), so they are used only when the product cannot be opened (e.g.
a catalogue copied away from its archive), with the nominal int16 x 10000 scaling.

The folder is replaced atomically as a whole: it is built in a hidden temporary sibling
(each file written through :func:`spectralearth.io.atomic_path`) and renamed into place,
so readers never see a half-written catalogue. ``validate()`` is never called here: the
extension schemas are remote and this pipeline runs offline.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.stac_io import DefaultStacIO
from shapely.geometry import mapping

from spectralearth.io import atomic_write_text

log = logging.getLogger(__name__)

PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
NODATA = -32768
DEFAULT_SCALE = 0.0001  # int16 reflectance x 10000
DEFAULT_OFFSET = 0.0


class _AtomicStacIO(DefaultStacIO):
    """pystac writer that sends every file through the project's atomic-write helper."""

    def write_text_to_href(self, href: str, txt: str) -> None:
        atomic_write_text(href, txt)


# ----------------------------------------------------------------------------- helpers


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # arrays/lists
        return False


def _utc_datetime(v: Any) -> datetime | None:
    if _is_missing(v):
        return None
    ts = pd.Timestamp(v)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").to_pydatetime()


def _floats(v: Any) -> list[float]:
    if _is_missing(v):
        return []
    return [float(x) for x in np.asarray(v, dtype=float).ravel()]


def _percent(frac: Any, fallback: Any = None) -> float | None:
    """A 0..1 fraction as a percent rounded to 0.01; the fallback when the fraction is NaN."""
    for v in (frac, fallback):
        if not _is_missing(v) and math.isfinite(float(v)):
            return round(min(max(float(v), 0.0), 1.0) * 100.0, 2)
    return None


def _metadata_href(path: Path, scene: str) -> str | None:
    """The METADATA.XML of a product folder or zip (``/vsizip/`` path), found by suffix."""
    want = f"{scene}-METADATA.XML".upper()
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file() and f.name.upper() == want:
                return str(f)
    elif path.is_file() and path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    if PurePosixPath(member).name.upper() == want:
                        return f"/vsizip/{path}/{member}"
        except (zipfile.BadZipFile, OSError):
            return None
    return None


def _image_media_type(href: str) -> str | None:
    name = href.upper()
    if name.endswith(("_COG.TIF", "_COG.TIFF")):
        return pystac.MediaType.COG
    if name.endswith((".TIF", ".TIFF")):
        return pystac.MediaType.GEOTIFF
    return None  # ENVI .BSQ/.BIL/.BIP: no registered media type


def _proj_code(crs: Any) -> tuple[str | None, str | None]:
    """(``proj:code`` like "EPSG:32633", WKT2 when the CRS has no authority code)."""
    if _is_missing(crs):
        return None, None
    text = str(crs)
    if text.upper().startswith("EPSG:"):
        return text.upper(), None
    try:
        from pyproj import CRS

        c = CRS.from_user_input(text)
        auth = c.to_authority()
        if auth is not None:
            return f"{auth[0]}:{auth[1]}", None
        return None, c.to_wkt()
    except Exception:  # unparsable CRS text: keep it as is rather than fail the export
        return None, text


def _native_bbox(transform: list[float], width: int, height: int) -> list[float] | None:
    if len(transform) < 6:
        return None
    a, b, c, d, e, f = transform[:6]
    xs, ys = [], []
    for col, row in ((0, 0), (width, 0), (0, height), (width, height)):
        xs.append(a * col + b * row + c)
        ys.append(d * col + e * row + f)
    return [min(xs), min(ys), max(xs), max(ys)]


def _stac_nodata(value: float | None) -> float | str | None:
    """raster:bands nodata: a number, "nan" (JSON has no NaN) or None (no nodata)."""
    if value is None:
        return None
    return "nan" if math.isnan(value) else value


def _product_files(row: pd.Series, path: Path) -> tuple[str, str | None, dict[str, list[float]]]:
    """(image href, metadata href, band table in file order) of one catalogue row.

    The band table holds wavelength and FWHM (nm), gain and offset per band. From the
    product itself when it opens and agrees with the catalogue's band count; otherwise from
    the catalogue columns, the nominal scaling and the conventional file name.
    """
    scene = str(row["scene"])
    n_bands = None if _is_missing(row.get("n_bands")) else int(row["n_bands"])
    try:
        from spectralearth.enmap.archive import open_scene

        product = open_scene(path)
        meta = product.meta
        if n_bands is not None and len(meta.wavelengths) != n_bands:
            raise ValueError(f"{len(meta.wavelengths)} bands, the catalogue says {n_bands}")
        gains = [float(g) for g in product.scaling.reflectance_gains]
        offsets = [float(o) for o in product.scaling.reflectance_offsets]
        table = {
            "wavelengths": [float(w) for w in meta.wavelengths],
            "fwhms": [float(w) for w in meta.fwhms],
            "gains": [g if math.isfinite(g) else DEFAULT_SCALE for g in gains],
            "offsets": [o if math.isfinite(o) else DEFAULT_OFFSET for o in offsets],
            "dtype": product.scaling.dtype,
            "nodata": _stac_nodata(product.scaling.nodata),
        }
        return str(product.image_path), _metadata_href(path, scene), table
    except Exception as exc:  # moved or damaged since cataloguing: describe from the row
        log.warning(
            "%s: product not readable at %s (%s); using catalogue columns", scene, path, exc
        )
    wl = _floats(row.get("wavelengths"))
    fw = _floats(row.get("fwhms"))
    if len(fw) != len(wl):
        fw = [math.nan] * len(wl)
    table = {
        "wavelengths": wl,
        "fwhms": fw,
        "gains": [DEFAULT_SCALE] * len(wl),
        "offsets": [DEFAULT_OFFSET] * len(wl),
    }
    folder = path.with_suffix("") if path.suffix.lower() == ".zip" else path
    return str(folder / f"{scene}-SPECTRAL_IMAGE.TIF"), _metadata_href(path, scene), table


# ----------------------------------------------------------------------------- items


def scene_item(row: pd.Series) -> pystac.Item:
    """One STAC Item for one (non-rejected) catalogue row."""
    scene = str(row["scene"])
    geom = row["geometry"]
    if geom is None or geom.is_empty:
        raise ValueError(f"{scene}: no footprint, cannot make a STAC Item")
    start = _utc_datetime(row.get("start_time"))
    stop = _utc_datetime(row.get("stop_time")) or start
    if start is None:
        raise ValueError(f"{scene}: no start_time, cannot make a STAC Item")

    props: dict[str, Any] = {
        "platform": "enmap",
        "instruments": ["hsi"],
        "constellation": "enmap",
        "processing:level": "L2A",
        "spectralearth:status": str(row.get("status") or "ok"),
    }
    if not _is_missing(row.get("processor_version")):
        props["processing:version"] = str(row["processor_version"])
        props["spectralearth:processor_version"] = str(row["processor_version"])
    for col in ("scene_key", "datatake", "tile", "checksum"):
        if not _is_missing(row.get(col)):
            props[f"spectralearth:{col}"] = str(row[col])
    for col in ("haze_frac", "cloudshadow_frac", "cirrus_frac", "nodata_frac"):
        if not _is_missing(row.get(col)):
            props[f"spectralearth:{col}"] = round(float(row[col]), 6)
    if row.get("reason"):
        props["spectralearth:reason"] = str(row["reason"])

    item = pystac.Item(
        id=scene,
        geometry=mapping(geom),
        bbox=[float(v) for v in geom.bounds],
        datetime=start,
        properties=props,
        start_datetime=start,
        end_datetime=stop,
    )
    item.stac_extensions.append(PROCESSING_SCHEMA)

    eo = EOExtension.ext(item, add_if_missing=True)
    cloud = _percent(row.get("cloud_frac"), row.get("cloud_cover_xml"))
    snow = _percent(row.get("snow_frac"), row.get("snow_cover_xml"))
    if cloud is not None:
        eo.cloud_cover = cloud
    if snow is not None:
        eo.snow_cover = snow

    width = None if _is_missing(row.get("width")) else int(row["width"])
    height = None if _is_missing(row.get("height")) else int(row["height"])
    transform = _floats(row.get("transform"))[:6]
    code, wkt2 = _proj_code(row.get("crs"))
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(
        code=code,
        wkt2=wkt2,
        transform=transform or None,
        shape=[height, width] if width and height else None,
        bbox=_native_bbox(transform, width, height) if transform and width and height else None,
    )

    path = Path(str(row["path"])) if not _is_missing(row.get("path")) else Path(scene)
    image_href, xml_href, table = _product_files(row, path.absolute())
    image_asset = pystac.Asset(
        href=image_href,
        title="Surface reflectance (int16, x 10000)",
        media_type=_image_media_type(image_href),
        roles=["data", "reflectance"],
    )
    item.add_asset("image", image_asset)
    resolution = abs(transform[0]) if transform else None
    EOExtension.ext(image_asset).bands = [
        Band.create(
            name=f"B{i + 1:03d}",
            center_wavelength=round(wl / 1000.0, 6),
            full_width_half_max=round(fw / 1000.0, 6) if math.isfinite(fw) else None,
        )
        for i, (wl, fw) in enumerate(zip(table["wavelengths"], table["fwhms"], strict=True))
    ]
    RasterExtension.ext(image_asset, add_if_missing=True).bands = [
        RasterBand.create(
            nodata=table.get("nodata", NODATA),
            data_type=DataType(table.get("dtype", "int16")),
            scale=gain,
            offset=offset,
            spatial_resolution=resolution,
        )
        for gain, offset in zip(table["gains"], table["offsets"], strict=True)
    ]
    if xml_href is not None:
        item.add_asset(
            "metadata",
            pystac.Asset(
                href=xml_href,
                title="EnMAP L2A product metadata",
                media_type=pystac.MediaType.XML,
                roles=["metadata"],
            ),
        )
    else:
        log.warning("%s: METADATA.XML not found in %s; no metadata asset", scene, path)
    return item


# ----------------------------------------------------------------------------- collection


def build_collection(
    catalog: gpd.GeoDataFrame, collection_id: str = "enmap-l2a"
) -> pystac.Collection:
    """The in-memory Collection (items attached, hrefs not yet set)."""
    rows = catalog[catalog["status"].astype(str) != "rejected"]
    no_footprint = rows.geometry.isna() | rows.geometry.is_empty if len(rows) else []
    if len(rows) and no_footprint.any():
        log.warning(
            "no footprint, left out of STAC: %s", ", ".join(rows.loc[no_footprint, "scene"])
        )
        rows = rows[~no_footprint]
    dup = rows["scene"].duplicated()
    if dup.any():  # e.g. a product delivered both as a folder and as a .zip: ids must be unique
        log.warning("duplicate scenes, first row kept: %s", ", ".join(rows.loc[dup, "scene"]))
        rows = rows[~dup]
    items = [scene_item(row) for _, row in rows.sort_values("scene").iterrows()]

    if items:
        bboxes = np.array([it.bbox for it in items], dtype=float)
        bbox = [*bboxes[:, :2].min(axis=0).tolist(), *bboxes[:, 2:].max(axis=0).tolist()]
        starts = [it.common_metadata.start_datetime or it.datetime for it in items]
        ends = [it.common_metadata.end_datetime or it.datetime for it in items]
        interval = [min(starts), max(ends)]
    else:
        bbox = [-180.0, -90.0, 180.0, 90.0]
        interval = [None, None]

    n_rejected = int((catalog["status"].astype(str) == "rejected").sum()) if len(catalog) else 0
    collection = pystac.Collection(
        id=collection_id,
        title="EnMAP L2A scene catalogue",
        description=(
            f"EnMAP HSI L2A surface reflectance products catalogued by spectralearth: "
            f"{len(items)} items ({n_rejected} rejected products left out)."
        ),
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval])),
        license="other",
        providers=[
            pystac.Provider(
                name="DLR",
                roles=[
                    pystac.ProviderRole.PRODUCER,
                    pystac.ProviderRole.PROCESSOR,
                    pystac.ProviderRole.LICENSOR,
                ],
                url="https://www.enmap.org",
            )
        ],
        keywords=["EnMAP", "hyperspectral", "L2A", "surface reflectance"],
    )
    collection.summaries.add("platform", ["enmap"])
    collection.summaries.add("constellation", ["enmap"])
    collection.summaries.add("instruments", ["hsi"])
    collection.summaries.add("processing:level", ["L2A"])
    statuses = sorted({it.properties["spectralearth:status"] for it in items})
    if statuses:
        collection.summaries.add("spectralearth:status", statuses)
    clouds = [it.properties["eo:cloud_cover"] for it in items if "eo:cloud_cover" in it.properties]
    if clouds:
        collection.summaries.add(
            "eo:cloud_cover", pystac.RangeSummary(minimum=min(clouds), maximum=max(clouds))
        )
    codes = sorted({it.properties["proj:code"] for it in items if it.properties.get("proj:code")})
    if codes:
        collection.summaries.add("proj:code", codes)
    for it in items:
        collection.add_item(it)
    return collection


def write_stac(catalog: gpd.GeoDataFrame, out_dir: Path, collection_id: str = "enmap-l2a") -> Path:
    """Write ``catalog`` as a self-contained STAC Collection; returns ``out_dir/collection.json``.

    One Item per row whose status is not "rejected" (superseded rows are included and say so
    in ``spectralearth:status``). An existing ``out_dir`` is replaced as a whole.
    """
    out_dir = Path(out_dir)
    collection = build_collection(catalog, collection_id)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders
    try:
        # a file href as root: pystac takes a folder name with a dot (".x.tmp") for a file
        collection.normalize_hrefs(str(tmp / "collection.json"))
        collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=_AtomicStacIO())
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "collection.json"


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an existing folder; the old one is restored on failure.

    Two renames: readers see either the old complete folder, briefly no folder, or the new
    complete folder; never a mix.
    """
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{datetime.now(UTC):%H%M%S%f}")
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    try:
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # not every filesystem lets a folder be fsynced
        pass
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
