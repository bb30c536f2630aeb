"""An EnMAP L2A product: find its files, parse METADATA.XML safely, read image and QL masks by window.

Product layout (DLR delivery, one folder per tile)::

    ENMAP01-____L2A-DT<datatake:10>_<start:YYYYMMDDTHHMMSS>Z_<tile:3>_V<version:6>_<processed>Z/
        <name>-METADATA.XML
        <name>-SPECTRAL_IMAGE.TIF            int16 reflectance x 10000, nodata -32768
        <name>-QL_QUALITY_CLOUD.TIF  ...     uint8 masks, 1 = flagged
        <name>-QL_PIXELMASK.TIF              defective pixels (any band flagged = defective)

The XML is parsed with defusedxml (no entities, no DTDs, no network).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
from defusedxml import ElementTree as SafeET
from rasterio.windows import Window

QL_LAYERS = (
    "QL_QUALITY_CLOUD",
    "QL_QUALITY_SNOW",
    "QL_QUALITY_HAZE",
    "QL_QUALITY_CLOUDSHADOW",
    "QL_QUALITY_CIRRUS",
    "QL_PIXELMASK",
)
NODATA = -32768
PRODUCT_NAME_RE = re.compile(
    r"^ENMAP01-____L2A-DT(?P<datatake>\d{10})_(?P<start>\d{8}T\d{6})Z_(?P<tile>\d{3})"
    r"_V(?P<version>\d{6})_(?P<processed>\d{8}T\d{6})Z$"
)
BAD_BAND_MEAN = -1000000.0


class ProductError(ValueError):
    """A product cannot be read; the message names the product and the reason."""

    def __init__(self, product: str, reason: str):
        super().__init__(f"{product}: {reason}")
        self.product = product
        self.reason = reason


def parse_product_name(name: str) -> dict[str, str]:
    """Datatake, start time, tile, processor version and processing time from a product name."""
    m = PRODUCT_NAME_RE.match(name)
    if not m:
        raise ProductError(name, "name does not follow the EnMAP L2A naming convention")
    return m.groupdict()


def _utc(text: str) -> datetime:
    text = text.strip().rstrip("Z")
    if "." in text:  # XML times carry microseconds, sometimes more digits than Python takes
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass
class L2AMetadata:
    """The fields of METADATA.XML the pipeline uses."""

    band_numbers: np.ndarray
    wavelengths: np.ndarray
    fwhms: np.ndarray
    gains: np.ndarray
    offsets: np.ndarray
    bad_bands: np.ndarray  # bool, from product/bandStatistics mean == -1000000
    vnir_channels: tuple[int, ...]
    swir_channels: tuple[int, ...]
    footprint_lonlat: list[tuple[float, float]]
    start_time: datetime
    stop_time: datetime
    cover: dict[str, float]  # percent, from specific/qualityFlag
    processor_version: str
    tile_id: str
    datatake_id: str
    projection: str
    raw_fields: dict[str, str] = field(default_factory=dict)


def _text(root, path: str, product: str) -> str:
    node = root.find(path)
    if node is None or node.text is None:
        raise ProductError(product, f"METADATA.XML lacks {path}")
    return node.text.strip()


def _channels(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    return tuple(int(x) for x in text.replace(" ", "").split(",") if x)


def parse_metadata(xml: str | Path | bytes, product: str = "?") -> L2AMetadata:
    """Parse an L2A METADATA.XML (path or bytes) safely into :class:`L2AMetadata`."""
    try:
        if isinstance(xml, bytes):
            root = SafeET.fromstring(xml, forbid_dtd=True)
        else:
            root = SafeET.parse(str(xml), forbid_dtd=True).getroot()
    except Exception as exc:  # defusedxml raises its own types for entities / DTDs
        raise ProductError(product, f"METADATA.XML is not safe, well-formed XML: {exc}") from exc

    bands = root.findall("specific/bandCharacterisation/bandID")
    if not bands:
        raise ProductError(product, "METADATA.XML has no specific/bandCharacterisation/bandID")
    numbers, wl, fw, gain, off = [], [], [], [], []
    for b in bands:
        try:
            numbers.append(int(b.get("number")))
            wl.append(float(b.findtext("wavelengthCenterOfBand")))
            fw.append(float(b.findtext("FWHMOfBand")))
            gain.append(float(b.findtext("GainOfBand")))
            off.append(float(b.findtext("OffsetOfBand")))
        except (TypeError, ValueError) as exc:
            raise ProductError(product, f"bad band characterisation entry: {exc}") from exc
    wl_arr = np.array(wl)
    if not np.all(np.isfinite(wl_arr)):
        raise ProductError(product, "band wavelengths contain NaN or inf")

    means = {
        int(b.get("number")): float(b.findtext("mean", "nan"))
        for b in root.findall("product/bandStatistics/bandID")
    }
    bad = np.array([means.get(n, 0.0) == BAD_BAND_MEAN for n in numbers])

    footprint = []
    for p in root.findall("base/spatialCoverage/boundingPolygon/point"):
        if (p.findtext("frame") or "").strip() == "center":
            continue
        footprint.append((float(p.findtext("longitude")), float(p.findtext("latitude"))))
    if len(footprint) < 3:
        raise ProductError(product, "METADATA.XML bounding polygon has fewer than 3 points")

    q = "specific/qualityFlag/"
    cover = {}
    for key in ("cloudCover", "hazeCover", "cirrusCover", "snowCover", "cloudShadow"):
        txt = root.findtext(q + key)
        cover[key] = float(txt) if txt not in (None, "") else float("nan")

    return L2AMetadata(
        band_numbers=np.array(numbers),
        wavelengths=wl_arr,
        fwhms=np.array(fw),
        gains=np.array(gain),
        offsets=np.array(off),
        bad_bands=bad,
        vnir_channels=_channels(root.findtext("specific/vnirProductQuality/expectedChannelsList")),
        swir_channels=_channels(root.findtext("specific/swirProductQuality/expectedChannelsList")),
        footprint_lonlat=footprint,
        start_time=_utc(_text(root, "base/temporalCoverage/startTime", product)),
        stop_time=_utc(_text(root, "base/temporalCoverage/stopTime", product)),
        cover=cover,
        processor_version=(root.findtext("base/revision") or "").strip(),
        tile_id=(root.findtext("specific/tileID") or "").strip(),
        datatake_id=(root.findtext("specific/datatakeID") or "").strip(),
        projection=(root.findtext("product/ortho/projection") or "").strip(),
    )


def _find_file(folder: Path, name: str, suffix: str) -> Path | None:
    """``<name>-<suffix>`` with .TIF/.tif/_COG.TIF/.tiff variants."""
    for candidate in sorted(folder.iterdir()):
        stem = candidate.name
        if not stem.upper().startswith(f"{name}-{suffix}".upper()):
            continue
        rest = stem[len(name) + 1 + len(suffix) :].upper()
        if rest in (".TIF", ".TIFF", "_COG.TIF", "_COG.TIFF", ".XML"):
            return candidate
    return None


@dataclass
class L2AProduct:
    """One L2A product folder: metadata parsed, rasters opened lazily by window."""

    path: Path
    name: str
    meta: L2AMetadata
    image_path: Path
    ql_paths: dict[str, Path]

    @property
    def scene_key(self) -> str:
        """Product name without the processing time: two processings of one tile share it."""
        n = parse_product_name(self.name)
        return f"DT{n['datatake']}_{n['start']}Z_{n['tile']}"

    def profile(self) -> dict:
        with rasterio.open(self.image_path) as src:
            return dict(src.profile)

    def read(self, window: Window | None = None, bands: np.ndarray | None = None) -> np.ndarray:
        """Raw stored values (int16 reflectance x 10000) [bands, rows, cols] in file band order."""
        indexes = None if bands is None else [int(b) + 1 for b in bands]
        with rasterio.open(self.image_path) as src:
            return src.read(indexes, window=window)

    def read_reflectance(self, window: Window | None = None) -> np.ndarray:
        """Reflectance (gain/offset applied) as float32, NaN where nodata."""
        raw = self.read(window)
        refl = raw * self.meta.gains[:, None, None] + self.meta.offsets[:, None, None]
        return np.where(raw == NODATA, np.nan, refl).astype(np.float32)

    def read_mask(self, layer: str, window: Window | None = None) -> np.ndarray:
        """A QL layer as a boolean mask [rows, cols]; multi-band layers are OR-ed."""
        if layer not in self.ql_paths:
            raise ProductError(self.name, f"quality layer {layer} is missing")
        with rasterio.open(self.ql_paths[layer]) as src:
            data = src.read(window=window)
        return np.any(data > 0, axis=0)


def open_product(path: str | Path) -> L2AProduct:
    """Open an L2A product folder; raises :class:`ProductError` naming the product."""
    path = Path(path)
    name = path.name
    if not path.is_dir():
        raise ProductError(name, f"not a product folder: {path}")
    parse_product_name(name)
    xml = _find_file(path, name, "METADATA")
    if xml is None:
        raise ProductError(name, "METADATA.XML is missing")
    meta = parse_metadata(xml, product=name)
    image = _find_file(path, name, "SPECTRAL_IMAGE")
    if image is None:
        raise ProductError(name, "SPECTRAL_IMAGE.TIF is missing")
    try:
        with rasterio.open(image) as src:
            count = src.count
    except rasterio.errors.RasterioIOError as exc:
        raise ProductError(name, f"SPECTRAL_IMAGE cannot be opened: {exc}") from exc
    if count != len(meta.wavelengths):
        raise ProductError(
            name, f"image has {count} bands but METADATA.XML describes {len(meta.wavelengths)}"
        )
    ql = {}
    for layer in QL_LAYERS:
        p = _find_file(path, name, layer)
        if p is not None:
            ql[layer] = p
    return L2AProduct(path=path, name=name, meta=meta, image_path=image, ql_paths=ql)


def find_products(archive: str | Path) -> list[Path]:
    """Product folders directly under ``archive`` (names matching the L2A convention), sorted."""
    archive = Path(archive)
    if not archive.is_dir():
        raise FileNotFoundError(f"archive folder not found: {archive}")
    return sorted(p for p in archive.iterdir() if p.is_dir() and PRODUCT_NAME_RE.match(p.name))
