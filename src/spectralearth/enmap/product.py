"""An EnMAP L2A product: find its files, parse METADATA.XML safely, read image and QL masks by window.

Product layout (DLR delivery, one folder or .zip per tile)::

    ENMAP01-____L2A-DT<datatake:10>_<start:YYYYMMDDTHHMMSS>Z_<tile:3>_V<version:6>_<processed>Z/
        <name>-METADATA.XML
        <name>-SPECTRAL_IMAGE.TIF            int16 reflectance x 10000, nodata -32768
                                             (also _COG.TIF, .tiff, or ENVI .BSQ/.BIL/.BIP + .HDR)
        <name>-QL_QUALITY_CLOUD.TIF  ...     uint8 masks, 1 = flagged
        <name>-QL_PIXELMASK.TIF              defective pixels (any band flagged = defective)

The XML is parsed with defusedxml (no entities, no DTDs, no network).
"""

from __future__ import annotations

import re
import stat
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

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


IMAGE_SUFFIXES = (".TIF", ".TIFF", "_COG.TIF", "_COG.TIFF", ".BSQ", ".BIL", ".BIP")


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


@dataclass
class L2AProduct:
    """One L2A product (folder or zip): metadata parsed, rasters opened lazily by window.

    ``image_path`` and ``ql_paths`` are GDAL paths (a file path, or /vsizip/... for a zip).
    """

    path: Path
    name: str
    meta: L2AMetadata
    image_path: str
    ql_paths: dict[str, str]

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
        """Raw stored values (int16 reflectance x 10000) [bands, rows, cols], file band order
        unless ``bands`` (0-based file indices) picks and orders them."""
        indexes = None if bands is None else [int(b) + 1 for b in bands]
        try:
            with rasterio.open(self.image_path) as src:
                return src.read(indexes, window=window)
        except rasterio.errors.RasterioIOError as exc:
            raise ProductError(self.name, f"SPECTRAL_IMAGE cannot be read: {exc}") from exc

    def read_sorted(self, window: Window | None = None) -> np.ndarray:
        """All bands sorted by wavelength (whatever order the product stores them in)."""
        return self.read(window, bands=self.wavelength_order)

    def read_reflectance(self, window: Window | None = None) -> np.ndarray:
        """Reflectance (gain/offset applied) as float32, NaN where nodata; file band order."""
        raw = self.read(window)
        refl = raw * self.meta.gains[:, None, None] + self.meta.offsets[:, None, None]
        return np.where(raw == NODATA, np.nan, refl).astype(np.float32)

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


def open_product(path: str | Path) -> L2AProduct:
    """Open an L2A product folder or .zip; raises :class:`ProductError` naming the product."""
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
    try:
        with rasterio.open(image_path) as src:
            count = src.count
    except rasterio.errors.RasterioIOError as exc:
        raise ProductError(name, f"SPECTRAL_IMAGE cannot be opened: {exc}") from exc
    if count != len(meta.wavelengths):
        raise ProductError(
            name, f"image has {count} bands but METADATA.XML describes {len(meta.wavelengths)}"
        )
    ql = {}
    for layer in QL_LAYERS:
        f = files.find(layer, IMAGE_SUFFIXES)
        if f is not None:
            ql[layer] = files.gdal_path(f)
    return L2AProduct(path=path, name=name, meta=meta, image_path=image_path, ql_paths=ql)


def is_product_entry(path: Path) -> bool:
    """A folder or .zip named like an L2A product."""
    return (path.is_dir() or path.name.lower().endswith(".zip")) and bool(
        PRODUCT_NAME_RE.match(product_name(path))
    )


def find_products(archive: str | Path) -> list[Path]:
    """Product folders and zips directly under ``archive`` (L2A names), sorted."""
    archive = Path(archive)
    if not archive.is_dir():
        raise FileNotFoundError(f"archive folder not found: {archive}")
    return sorted(p for p in archive.iterdir() if p.is_dir() and PRODUCT_NAME_RE.match(p.name))


def find_product_path(archive: str | Path, name: str) -> Path:
    """The folder or zip of product ``name``, or the generic image whose stem is ``name``, in
    ``archive`` (names are checked first, so ``..`` or an absolute path never reach outside)."""
    if not PRODUCT_NAME_RE.match(name):
        from spectralearth.enmap.generic import is_generic_image

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
            raise ProductError(name, "not a valid scene name")
        for candidate in sorted(Path(archive).glob(f"{name}.*")):
            if is_generic_image(candidate):
                return candidate
        raise ProductError(name, f"not found in the archive {archive}")
    for candidate in (
        Path(archive) / name,
        Path(archive) / f"{name}.zip",
        Path(archive) / f"{name}.ZIP",
    ):
        if candidate.exists():
            return candidate
    raise ProductError(name, f"not found in the archive {archive}")


def scene_key_of(name: str) -> str:
    """Datatake, start time and tile of a product name (the same for every processing)."""
    n = parse_product_name(name)
    return f"DT{n['datatake']}_{n['start']}Z_{n['tile']}"


def newest_processings(entries: list[Path]) -> list[Path]:
    """Of several processings of one datatake/tile keep the newest (latest processing time);
    entries that are not L2A products pass through."""
    best: dict[str, Path] = {}
    for entry in entries:
        name = product_name(entry)
        if not PRODUCT_NAME_RE.match(name):
            best[f"other:{entry.name}"] = entry
            continue
        key = scene_key_of(name)
        if key not in best or name > product_name(best[key]):
            best[key] = entry
    return sorted(best.values())


def find_scenes(archive: str | Path) -> list[Path]:
    """L2A products and generic hyperspectral images directly under ``archive``, sorted."""
    from spectralearth.enmap.generic import is_generic_image

    archive = Path(archive)
    if not archive.is_dir():
        raise FileNotFoundError(f"archive folder not found: {archive}")
    return sorted(p for p in archive.iterdir() if is_product_entry(p) or is_generic_image(p))


def scene_name(path: str | Path) -> str:
    """Partition key / catalogue id of a scene: the L2A product name or the image's stem."""
    path = Path(path)
    return product_name(path) if is_product_entry(path) else path.stem


def open_scene(path: str | Path):
    """An L2A product (folder or zip) or any image whose bands carry wavelengths."""
    from spectralearth.enmap.generic import is_generic_image, open_generic

    path = Path(path)
    if is_product_entry(path):
        return open_product(path)
    if is_generic_image(path):
        return open_generic(path)
    raise ProductError(
        path.name,
        "neither an EnMAP L2A product (folder or .zip) nor an image with band wavelengths",
    )
