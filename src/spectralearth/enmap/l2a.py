"""An EnMAP L2A product: find its files, parse METADATA.XML strictly, validate every layer at
open time, read image and QL masks by window.

Product layout (DLR delivery, one folder or .zip per tile)::

    ENMAP01-____L2A-DT<datatake:10>_<start:YYYYMMDDTHHMMSS>Z_<tile:3>_V<version:6>_<processed>Z/
        <name>-METADATA.XML
        <name>-SPECTRAL_IMAGE.TIF            int16 reflectance x 10000, nodata -32768
                                             (also _COG.TIF, .tiff, or ENVI .BSQ/.BIL/.BIP + .HDR)
        <name>-QL_QUALITY_CLOUD.TIF  ...     uint8 masks, 1 = flagged
        <name>-QL_PIXELMASK.TIF              defective pixels (any band flagged = defective)

What :func:`open_product` checks (each failure is a :class:`ProductError` naming the product
and the field or layer):

* METADATA.XML, parsed with defusedxml (no entities, no DTDs, no network); every value the
  pipeline uses must parse (band numbers, wavelengths, FWHMs, gains, offsets, band
  statistics, footprint points, times, cover percentages, channel lists, background value):
  a value that is present but unreadable is an error, never a default. Optional elements
  that are absent read as NaN / empty (``cover``: the product does not say).
* Band wavelengths: finite, positive, none listed twice; as many as the image has bands.
* SPECTRAL_IMAGE: opens, its last block reads (a truncated file fails here), and its values
  become int16 reflectance x 10000 through :mod:`spectralearth.enmap.values` (dtype, the
  file's nodata tag, else the XML's ``backgroundValue``, gain, a plausible range).
* Every QL layer present lies on the image's grid (size, transform, CRS).
* The XML footprint is a valid polygon that overlaps the image.

Missing QL layers are not refused here (the reader records which are present); the policy
is the view's (:func:`spectralearth.enmap.view.open_view`).
"""

from __future__ import annotations

import math
import re
import stat
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import numpy as np
import rasterio
import shapely
from defusedxml import ElementTree as SafeET
from pyproj import Transformer
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from spectralearth.enmap.checks import check_layer_grid, check_wavelengths
from spectralearth.enmap.scene import NODATA, QL_LAYERS, Grid, ProductError
from spectralearth.enmap.values import ValueScaling, decide_scaling, read_sample

PRODUCT_NAME_RE = re.compile(
    r"^ENMAP01-____L2A-DT(?P<datatake>\d{10})_(?P<start>\d{8}T\d{6})Z_(?P<tile>\d{3})"
    r"_V(?P<version>\d{6})_(?P<processed>\d{8}T\d{6})Z$"
)
BAD_BAND_MEAN = -1000000.0
COVER_KEYS = ("cloudCover", "hazeCover", "cirrusCover", "snowCover", "cloudShadow")
IMAGE_SUFFIXES = (".TIF", ".TIFF", "_COG.TIF", "_COG.TIFF", ".BSQ", ".BIL", ".BIP")


def parse_product_name(name: str) -> dict[str, str]:
    """Datatake, start time, tile, processor version and processing time from a product name."""
    m = PRODUCT_NAME_RE.match(name)
    if not m:
        raise ProductError(name, "name does not follow the EnMAP L2A naming convention")
    return m.groupdict()


@dataclass
class L2AMetadata:
    """The fields of METADATA.XML the pipeline uses."""

    band_numbers: np.ndarray
    wavelengths: np.ndarray
    fwhms: np.ndarray
    gains: np.ndarray
    offsets: np.ndarray
    bad_bands: np.ndarray  # bool: bandStatistics mean == -1000000, or empty in the sample
    vnir_channels: tuple[int, ...]
    swir_channels: tuple[int, ...]
    footprint_lonlat: list[tuple[float, float]]
    start_time: datetime
    stop_time: datetime
    cover: dict[str, float]  # percent, from specific/qualityFlag; NaN where absent
    processor_version: str
    tile_id: str
    datatake_id: str
    projection: str
    background_value: float | None = None  # specific/backgroundValue
    raw_fields: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- METADATA.XML


class _Xml:
    """Strict readers of one METADATA.XML: every error names the product and the field."""

    def __init__(self, root, product: str):
        self.root, self.product = root, product

    def fail(self, field: str, why: str) -> ProductError:
        return ProductError(self.product, f"METADATA.XML {field}: {why}")

    def text(self, node, path: str, field: str, required: bool = True) -> str | None:
        found = node.find(path)
        text = None if found is None or found.text is None else found.text.strip()
        if not text:
            if required:
                raise self.fail(field, "is missing")
            return None
        return text

    def number(self, text: str, field: str, finite: bool = True) -> float:
        try:
            value = float(text)
        except ValueError:
            raise self.fail(field, f"{text!r} is not a number") from None
        if finite and not math.isfinite(value):
            raise self.fail(field, f"{text!r} is NaN or inf")
        return value

    def integer(self, text: str | None, field: str) -> int:
        if text is None:
            raise self.fail(field, "is missing")
        try:
            return int(text.strip())
        except ValueError:
            raise self.fail(field, f"{text!r} is not an integer") from None

    def time(self, path: str) -> datetime:
        text = self.text(self.root, path, path)
        try:
            return _utc(text)
        except ValueError:
            raise self.fail(path, f"{text!r} is not an ISO time") from None


def _utc(text: str) -> datetime:
    text = text.strip().rstrip("Z")
    if "." in text:  # XML times carry microseconds, sometimes more digits than Python takes
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _bands(x: _Xml) -> tuple[list[int], dict[str, list[float]]]:
    nodes = x.root.findall("specific/bandCharacterisation/bandID")
    if not nodes:
        raise x.fail("specific/bandCharacterisation/bandID", "is missing")
    numbers: list[int] = []
    values: dict[str, list[float]] = {
        k: [] for k in ("wavelengthCenterOfBand", "FWHMOfBand", "GainOfBand", "OffsetOfBand")
    }
    for node in nodes:
        n = x.integer(node.get("number"), "bandCharacterisation/bandID number")
        if n in numbers:
            raise x.fail("bandCharacterisation/bandID", f"band number {n} is listed twice")
        numbers.append(n)
        for key, out in values.items():
            where = f"bandCharacterisation/bandID {n} {key}"
            out.append(x.number(x.text(node, key, where), where))
    return numbers, values


def _bad_bands(x: _Xml, numbers: list[int]) -> np.ndarray:
    means: dict[int, float] = {}
    for node in x.root.findall("product/bandStatistics/bandID"):
        n = x.integer(node.get("number"), "bandStatistics/bandID number")
        if n not in numbers:
            raise x.fail("bandStatistics/bandID", f"band {n} is not in bandCharacterisation")
        where = f"bandStatistics/bandID {n} mean"
        means[n] = x.number(x.text(node, "mean", where), where)
    return np.array([means.get(n) == BAD_BAND_MEAN for n in numbers])


def _footprint(x: _Xml) -> list[tuple[float, float]]:
    points = []
    for i, p in enumerate(x.root.findall("base/spatialCoverage/boundingPolygon/point"), 1):
        if (p.findtext("frame") or "").strip() == "center":
            continue
        where = f"boundingPolygon point {i}"
        lon = x.number(x.text(p, "longitude", f"{where} longitude"), f"{where} longitude")
        lat = x.number(x.text(p, "latitude", f"{where} latitude"), f"{where} latitude")
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise x.fail(where, f"({lon}, {lat}) is not a longitude/latitude")
        points.append((lon, lat))
    if len(points) < 3:
        raise x.fail("base/spatialCoverage/boundingPolygon", "has fewer than 3 points")
    return points


def _cover(x: _Xml) -> dict[str, float]:
    cover = {}
    for key in COVER_KEYS:
        where = f"specific/qualityFlag/{key}"
        text = x.text(x.root, where, where, required=False)
        if text is None:
            cover[key] = math.nan  # the product does not say
            continue
        value = x.number(text, where)
        if not 0 <= value <= 100:
            raise x.fail(where, f"{text!r} is not a percentage (0..100)")
        cover[key] = value
    return cover


def _channels(x: _Xml, path: str) -> tuple[int, ...]:
    text = x.text(x.root, path, path, required=False)
    if text is None:
        return ()
    return tuple(x.integer(v, path) for v in text.replace(" ", "").split(","))


def parse_metadata(xml: str | Path | bytes, product: str = "?") -> L2AMetadata:
    """Parse an L2A METADATA.XML (path or bytes) safely and strictly into :class:`L2AMetadata`."""
    try:
        if isinstance(xml, bytes):
            root = SafeET.fromstring(xml, forbid_dtd=True)
        else:
            root = SafeET.parse(str(xml), forbid_dtd=True).getroot()
    except Exception as exc:  # defusedxml raises its own types for entities / DTDs
        raise ProductError(product, f"METADATA.XML is not safe, well-formed XML: {exc}") from exc
    x = _Xml(root, product)
    numbers, values = _bands(x)
    wavelengths = np.array(values["wavelengthCenterOfBand"])
    check_wavelengths(product, wavelengths, "wavelengths (METADATA.XML wavelengthCenterOfBand)")
    start = x.time("base/temporalCoverage/startTime")
    stop = x.time("base/temporalCoverage/stopTime")
    if stop < start:
        raise x.fail("base/temporalCoverage", f"stopTime {stop} is before startTime {start}")
    background = x.text(root, "specific/backgroundValue", "", required=False)
    return L2AMetadata(
        band_numbers=np.array(numbers),
        wavelengths=wavelengths,
        fwhms=np.array(values["FWHMOfBand"]),
        gains=np.array(values["GainOfBand"]),
        offsets=np.array(values["OffsetOfBand"]),
        bad_bands=_bad_bands(x, numbers),
        vnir_channels=_channels(x, "specific/vnirProductQuality/expectedChannelsList"),
        swir_channels=_channels(x, "specific/swirProductQuality/expectedChannelsList"),
        footprint_lonlat=_footprint(x),
        start_time=start,
        stop_time=stop,
        cover=_cover(x),
        processor_version=(root.findtext("base/revision") or "").strip(),
        tile_id=(root.findtext("specific/tileID") or "").strip(),
        datatake_id=(root.findtext("specific/datatakeID") or "").strip(),
        projection=(root.findtext("product/ortho/projection") or "").strip(),
        background_value=None
        if background is None
        else x.number(background, "specific/backgroundValue"),
    )


# ----------------------------------------------------------------------------- files


class _Files:
    """The files of a product, from a folder or a zip (read in place through GDAL's /vsizip/,
    nothing extracted, so a hostile zip cannot write anywhere)."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self.zip: zipfile.ZipFile | None = None
        if path.is_dir():
            root = path.resolve()
            self.members = {}
            for f in sorted(path.iterdir()):
                if f.is_symlink() and not f.resolve().is_relative_to(root):
                    raise ProductError(name, f"{f.name} is a link that leaves the product folder")
                self.members[f.name] = f
        elif path.suffix.lower() == ".zip" and path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ProductError(name, f"not a readable zip: {exc}") from exc
            self.members = {}
            for info in self.zip.infolist():
                member = info.filename
                parts = PurePosixPath(member.replace("\\", "/")).parts
                if (
                    member.startswith(("/", "\\"))
                    or ".." in parts
                    or re.match(r"^[A-Za-z]:", member)
                ):
                    raise ProductError(name, f"zip member {member!r} escapes the product folder")
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise ProductError(name, f"zip member {member!r} is a symbolic link")
                if not info.is_dir():
                    self.members[parts[-1]] = member
        else:
            raise ProductError(name, f"not a product folder or .zip: {path}")

    def find(self, suffix: str, extensions: tuple[str, ...]) -> str | None:
        """Name of ``<product>-<suffix><ext>`` in any letter case, or None."""
        want = f"{self.name}-{suffix}".upper()
        for fname in self.members:
            up = fname.upper()
            if up.startswith(want) and up[len(want) :] in extensions:
                return fname
        return None

    def gdal_path(self, fname: str) -> str:
        if self.zip is None:
            return str(self.members[fname])
        return f"/vsizip/{self.path.resolve()}/{self.members[fname]}"

    def read_bytes(self, fname: str) -> bytes:
        if self.zip is None:
            return self.members[fname].read_bytes()
        return self.zip.read(self.members[fname])


# ----------------------------------------------------------------------------- product


@dataclass
class L2AProduct:
    """One L2A product (folder or zip): metadata parsed, layers validated, rasters read lazily
    by window (see :class:`spectralearth.enmap.scene.Scene`).

    ``image_path`` and ``ql_paths`` are GDAL paths (a file path, or /vsizip/... for a zip).
    ``meta.gains``/``offsets`` are what the XML declares; ``scaling`` is what :meth:`read`
    applies (the same for the official int16 products).
    """

    path: Path
    name: str
    meta: L2AMetadata
    image_path: str
    ql_paths: dict[str, str]
    grid: Grid
    scaling: ValueScaling
    source: str = "enmap_l2a"
    quality_layers: tuple[str, ...] = QL_LAYERS
    counts: dict[str, int] = field(default_factory=lambda: {"nonfinite": 0, "out_of_range": 0})
    notes: list[str] = field(default_factory=list)

    @property
    def scene_key(self) -> str:
        """Product name without the processing time: two processings of one tile share it."""
        return scene_key_of(self.name)

    @property
    def wavelength_order(self) -> np.ndarray:
        """Band indices (file order) that sort the bands by wavelength."""
        return np.argsort(self.meta.wavelengths, kind="stable")

    def profile(self) -> dict:
        with rasterio.open(self.image_path) as src:
            return dict(src.profile)

    def read(self, window: Window | None = None, bands: np.ndarray | None = None) -> np.ndarray:
        """int16 reflectance x 10000 [bands, rows, cols], nodata -32768; file band order
        unless ``bands`` (0-based file indices) picks and orders them. Invalid values
        (NaN/inf, out of int16 range) read as nodata and are counted in ``counts``."""
        indexes = None if bands is None else [int(b) + 1 for b in bands]
        try:
            with rasterio.open(self.image_path) as src:
                raw = src.read(indexes, window=window)
        except rasterio.errors.RasterioIOError as exc:
            raise ProductError(self.name, f"SPECTRAL_IMAGE cannot be read: {exc}") from exc
        out, nonfinite, out_of_range = self.scaling.convert(raw, bands)
        self.counts["nonfinite"] += nonfinite
        self.counts["out_of_range"] += out_of_range
        return out

    def read_sorted(self, window: Window | None = None) -> np.ndarray:
        """All bands sorted by wavelength (whatever order the product stores them in)."""
        return self.read(window, bands=self.wavelength_order)

    def read_reflectance(self, window: Window | None = None) -> np.ndarray:
        """Reflectance as float32, NaN where nodata; file band order."""
        raw = self.read(window)
        return np.where(raw == NODATA, np.nan, raw * 1e-4).astype(np.float32)

    def read_mask(self, layer: str, window: Window | None = None) -> np.ndarray:
        """A QL layer as a boolean mask [rows, cols]; multi-band layers are OR-ed."""
        if layer not in self.ql_paths:
            raise ProductError(self.name, f"quality layer {layer} is missing")
        try:
            with rasterio.open(self.ql_paths[layer]) as src:
                data = src.read(window=window)
        except rasterio.errors.RasterioIOError as exc:
            raise ProductError(self.name, f"{layer} cannot be read: {exc}") from exc
        return np.any(data > 0, axis=0)


def product_name(path: str | Path) -> str:
    """The product name of a folder or zip (``.zip`` stripped)."""
    path = Path(path)
    return path.name[:-4] if path.name.lower().endswith(".zip") else path.name


def _check_complete(name: str, src) -> None:
    """Read the last block of the last band: a truncated TIFF fails here, not mid-curation."""
    bh, bw = src.block_shapes[0]
    row = ((src.height - 1) // bh) * bh
    col = ((src.width - 1) // bw) * bw
    window = Window(col, row, min(bw, src.width - col), min(bh, src.height - row))
    try:
        src.read(src.count, window=window)
    except rasterio.errors.RasterioIOError as exc:
        raise ProductError(name, f"SPECTRAL_IMAGE is truncated or corrupt: {exc}") from exc


def _check_footprint(name: str, meta: L2AMetadata, grid: Grid) -> None:
    """The XML footprint must be a polygon that overlaps the raster, or one of them is wrong."""
    footprint = Polygon(meta.footprint_lonlat)
    if not footprint.is_valid or footprint.area == 0:
        raise ProductError(name, "METADATA.XML bounding polygon is not a valid polygon")
    to_native = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform
    native = shapely.transform(footprint, to_native, interleaved=False)
    if not native.intersects(box(*grid.bounds)):
        raise ProductError(name, "METADATA.XML footprint does not intersect the image's extent")


def _open_image(name: str, image_path: str, meta: L2AMetadata):
    """(grid, scaling, sample report, nodata source) of the SPECTRAL_IMAGE."""
    try:
        with rasterio.open(image_path) as src:
            if src.count != len(meta.wavelengths):
                raise ProductError(
                    name,
                    f"image has {src.count} bands but METADATA.XML describes "
                    f"{len(meta.wavelengths)}",
                )
            if src.crs is None:
                raise ProductError(name, "SPECTRAL_IMAGE has no CRS")
            grid = Grid.of(src)
            _check_complete(name, src)
            sample = read_sample(src)
            nodata = src.nodata
    except rasterio.errors.RasterioIOError as exc:
        raise ProductError(name, f"SPECTRAL_IMAGE cannot be opened: {exc}") from exc
    nodata_from = "the image's nodata tag"
    if nodata is None and meta.background_value is not None:
        nodata, nodata_from = meta.background_value, "METADATA.XML backgroundValue"
    if nodata is None:
        nodata_from = "none (no nodata tag, no backgroundValue)"
    if sample.dtype.kind == "f":  # a float image: its unit is read off the values
        scaling, report = decide_scaling(
            name,
            sample,
            nodata,
            gain=np.ones(len(meta.gains)),
            offset=np.zeros(len(meta.gains)),
            declared=f"{sample.dtype} values",
            detect_unit=True,
        )
    else:
        scaling, report = decide_scaling(
            name,
            sample,
            nodata,
            gain=meta.gains * 1e4,
            offset=meta.offsets * 1e4,
            declared=_gain_text(meta),
            detect_unit=False,
        )
    return grid, scaling, report, nodata_from


def _gain_text(meta: L2AMetadata) -> str:
    gains, offsets = np.unique(meta.gains), np.unique(meta.offsets)
    g = f"{gains[0]:g}" if len(gains) == 1 else f"{gains.min():g}..{gains.max():g}"
    o = f"{offsets[0]:g}" if len(offsets) == 1 else f"{offsets.min():g}..{offsets.max():g}"
    return f"METADATA.XML GainOfBand {g}, OffsetOfBand {o}"


def open_product(path: str | Path) -> L2AProduct:
    """Open and validate an L2A product folder or .zip (see the module doc); raises
    :class:`ProductError` naming the product and the field."""
    path = Path(path)
    name = product_name(path)
    parse_product_name(name)
    files = _Files(path, name)
    xml = files.find("METADATA", (".XML",))
    if xml is None:
        raise ProductError(name, "METADATA.XML is missing")
    meta = parse_metadata(files.read_bytes(xml), product=name)
    image = files.find("SPECTRAL_IMAGE", IMAGE_SUFFIXES)
    if image is None:
        raise ProductError(
            name, "SPECTRAL_IMAGE (.TIF, _COG.TIF or ENVI .BSQ/.BIL/.BIP) is missing"
        )
    image_path = files.gdal_path(image)
    grid, scaling, report, nodata_from = _open_image(name, image_path, meta)
    ql = {}
    for layer in QL_LAYERS:
        f = files.find(layer, IMAGE_SUFFIXES)
        if f is None:
            continue
        ql[layer] = files.gdal_path(f)
        try:
            with rasterio.open(ql[layer]) as src:
                layer_grid = Grid.of(src)
        except rasterio.errors.RasterioIOError as exc:
            raise ProductError(name, f"{layer} cannot be opened: {exc}") from exc
        check_layer_grid(name, layer, grid, layer_grid)
    _check_footprint(name, meta, grid)
    meta.bad_bands = meta.bad_bands | report.empty_bands
    meta.raw_fields.update(
        source_dtype=scaling.dtype, source_scaling=scaling.source, nodata_from=nodata_from
    )
    notes = list(report.notes)
    if scaling.dtype != "int16" or not scaling.identity:
        notes.insert(0, f"SPECTRAL_IMAGE {scaling.dtype}: {scaling.source}")
    return L2AProduct(
        path=path,
        name=name,
        meta=meta,
        image_path=image_path,
        ql_paths=ql,
        grid=grid,
        scaling=scaling,
        notes=notes,
    )


def is_product_entry(path: Path) -> bool:
    """A folder or .zip named like an L2A product."""
    return (path.is_dir() or path.name.lower().endswith(".zip")) and bool(
        PRODUCT_NAME_RE.match(product_name(path))
    )


def scene_key_of(name: str) -> str:
    """Datatake, start time and tile of a product name (the same for every processing)."""
    n = parse_product_name(name)
    return f"DT{n['datatake']}_{n['start']}Z_{n['tile']}"
