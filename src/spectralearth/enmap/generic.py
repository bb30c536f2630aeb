"""Sensor-agnostic import: any GeoTIFF or ENVI hyperspectral image whose bands carry wavelengths.

:func:`open_generic` returns a :class:`GenericScene` with the duck-typed interface that
curation and the catalogue use on :class:`~spectralearth.enmap.l2a.L2AProduct`
(``name``, ``scene_key``, ``meta``, ``image_path``, ``ql_paths``, ``read``, ``read_mask``,
``profile``). Whatever the stored dtype, :meth:`GenericScene.read` returns **int16
reflectance x 10000** with nodata -32768, like an L2A SPECTRAL_IMAGE.

Where the band wavelengths come from (first complete source wins)

* ENVI images (``.bsq/.bil/.bip/.img/.dat`` or no extension, with a ``.hdr`` sidecar): the
  header's ``wavelength``, ``fwhm``, ``wavelength units``, ``bbl``, ``data ignore value``,
  ``reflectance scale factor`` and ``acquisition time``, parsed here from the header text
  (GDAL's exposure of these keys varies between versions and drivers).
* Per-band tags (default domain, case-insensitive): ``wavelength``, ``center_wavelength``,
  ``centre_wavelength``, ``central_wavelength``, ``band_wavelength``, ``wavelength_nm``,
  ``wavelength_um`` with ``wavelength_units``/``fwhm``/``bbl``; and GDAL's ``IMAGERY``
  domain (``CENTRAL_WAVELENGTH_UM``, ``FWHM_UM``).
* A dataset-level list (``wavelength = {...}`` in the default or GDAL ``ENVI`` domain).
* Band descriptions carrying a number with a unit, e.g. ``"418.24 nm"`` or
  ``"band 1 (418.24 Nanometers)"``.

Units: micrometres when declared (and the values are < 100) or when every wavelength is
< 10; otherwise nanometres. FWHMs follow the wavelengths' unit.

How stored values become reflectance x 10000

Through the shared rules of :mod:`spectralearth.enmap.values` (the L2A reader uses the same):
GDAL per-band scale/offset are applied when present; an explicit ``reflectance scale
factor`` (ENVI header, or a dataset tag of that name) fixes the factor to
``10000 / factor``; otherwise float (or GDAL-scaled) data is 0..1 or x 10000 reflectance as
its open-time sample says, and integer data is reflectance x 10000. The file's nodata tag
(or the header's ``data ignore value``) is nodata; NaN/inf and values outside the int16
range read as nodata and are counted in :attr:`GenericScene.counts`. A dtype that cannot
hold reflectance x 10000 (uint8 without a scale factor) or values that are not
reflectance x 10000 (a sample whose 99th percentile is outside 1 %..150 %) are refused.
Bands with no valid value in the sample are flagged bad (exact for small images, a
heuristic for large ones), in addition to ``bbl`` flags.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.errors import RasterioError
from rasterio.windows import Window

from spectralearth.enmap.checks import check_wavelengths
from spectralearth.enmap.scene import NODATA, QL_LAYERS, Grid, ProductError
from spectralearth.enmap.values import SampleReport, ValueScaling, decide_scaling, read_sample

TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
ENVI_SUFFIXES = frozenset({".bsq", ".bil", ".bip", ".img", ".dat", ""})
COVER_KEYS = ("cloudCover", "hazeCover", "cirrusCover", "snowCover", "cloudShadow")

_WL_KEYS = (
    "wavelength",
    "center_wavelength",
    "centre_wavelength",
    "central_wavelength",
    "band_wavelength",
    "wavelength_nm",
    "wavelength_um",
)
_FWHM_KEYS = ("fwhm", "fwhm_nm", "fwhm_um", "bandwidth")
_UNIT_KEYS = ("wavelength_units", "wavelength_unit", "wavelength units")
_START_KEYS = (
    "start_time",
    "acquisition_start_time",
    "acquisition time",
    "acquisition_time",
    "acquisition_datetime",
    "acquisition_date",
    "sensing_time",
    "datetime",
    "date_time",
    "tifftag_datetime",  # TIFF: time the *file* was written; only a last resort
)
_STOP_KEYS = ("stop_time", "end_time", "acquisition_stop_time", "acquisition_end_time")
_DESC_WL_RE = re.compile(
    r"(?P<value>[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*"
    r"(?P<unit>nanometers?|nanometres?|nm|micrometers?|micrometres?|microns?|um|µm)\b",
    re.IGNORECASE,
)


@dataclass
class GenericMetadata:
    """The :class:`~spectralearth.enmap.l2a.L2AMetadata` fields, for a generic image.

    * ``wavelengths``/``fwhms`` in nm, file band order; ``fwhms`` NaN where unknown.
    * ``gains``/``offsets`` convert the *stored file values* to reflectance
      (``refl = stored * gain + offset``): 1e-4/0 for reflectance x 10000, 1/0 for 0..1
      reflectance, GDAL scale/offset folded in. :meth:`GenericScene.read` has already applied
      them: its int16 output is always reflectance x 10000 (multiply by 1e-4).
    * ``start_time``/``stop_time``: **Optional**. Taken from acquisition tags (see
      ``raw_fields["start_time_source"]``); ``None`` when the file carries none. The file's
      modification time is never used: the caller decides what to do with a scene of
      unknown date. When only a start time is found, ``stop_time`` equals it.
    * ``cover``: the L2A cover keys, all NaN (no quality information).
    * ``raw_fields``: provenance strings (wavelength source, detected scaling, notes).
    """

    band_numbers: np.ndarray
    wavelengths: np.ndarray
    fwhms: np.ndarray
    gains: np.ndarray
    offsets: np.ndarray
    bad_bands: np.ndarray
    footprint_lonlat: list[tuple[float, float]]
    start_time: datetime | None
    stop_time: datetime | None
    cover: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COVER_KEYS, math.nan))
    vnir_channels: tuple[int, ...] = ()
    swir_channels: tuple[int, ...] = ()
    processor_version: str = ""
    tile_id: str = ""
    datatake_id: str = ""
    projection: str = ""
    raw_fields: dict[str, str] = field(default_factory=dict)


@dataclass
class GenericScene:
    """A GeoTIFF/ENVI hyperspectral image with the reading interface of an L2A product.

    ``name`` and ``scene_key`` are the file stem; ``path`` and ``image_path`` are the image
    file (the data file for ENVI); ``header_path`` is the ENVI ``.hdr`` (None for GeoTIFF).
    ``ql_paths`` and ``quality_layers`` are always empty: generic images have no EnMAP
    quality layers (the catalogue's cover fractions are NaN, curation's cloud/snow filters
    do not apply, and the view says so in its notes). ``scaling`` is what :meth:`read`
    applies (:mod:`spectralearth.enmap.values`).
    """

    path: Path
    name: str
    meta: GenericMetadata
    image_path: Path
    grid: Grid
    scaling: ValueScaling
    header_path: Path | None = None
    source: str = "generic"
    ql_paths: dict[str, Path] = field(default_factory=dict)
    quality_layers: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=lambda: {"nonfinite": 0, "out_of_range": 0})
    notes: list[str] = field(default_factory=list)

    @property
    def scene_key(self) -> str:
        """The file stem (a generic image carries no datatake/tile identity)."""
        return self.name

    def profile(self) -> dict:
        with rasterio.open(self.image_path) as src:
            return dict(src.profile)

    def read(self, window: Window | None = None, bands: np.ndarray | None = None) -> np.ndarray:
        """int16 reflectance x 10000 [bands, rows, cols] in file band order, nodata -32768.

        ``bands`` are 0-based file band indices (any order, e.g. from ``select_view``).
        NaN/inf values not declared as nodata become -32768 and are added to
        ``counts["nonfinite"]``; values outside the int16 range become -32768 and are
        counted in ``counts["out_of_range"]``.
        """
        idx = np.arange(len(self.meta.wavelengths)) if bands is None else np.asarray(bands)
        indexes = [int(b) + 1 for b in idx]
        try:
            with rasterio.open(self.image_path) as src:
                raw = src.read(indexes, window=window)
        except RasterioError as exc:
            raise ProductError(self.image_path.name, f"image cannot be read: {exc}") from exc
        out, nonfinite, out_of_range = self.scaling.convert(raw, idx)
        self.counts["nonfinite"] += nonfinite
        self.counts["out_of_range"] += out_of_range
        return out

    def read_reflectance(self, window: Window | None = None) -> np.ndarray:
        """Reflectance as float32 (``read() * 1e-4``), NaN where nodata."""
        raw = self.read(window)
        return np.where(raw == NODATA, np.nan, raw * 1e-4).astype(np.float32)

    def read_mask(self, layer: str, window: Window | None = None) -> np.ndarray:
        """All-False mask [rows, cols]: a generic image has no QL layers (nothing is flagged).

        An unknown layer name raises ProductError.
        """
        if layer not in QL_LAYERS:
            raise ProductError(self.name, f"unknown quality layer {layer}")
        full = Window(0, 0, self.grid.width, self.grid.height)
        win = full if window is None else window.intersection(full)
        return np.zeros((int(round(win.height)), int(round(win.width))), dtype=bool)


# ----------------------------------------------------------------------------- ENVI header


def parse_envi_header(text: str) -> dict[str, str]:
    """``key = value`` pairs of an ENVI header; keys lower-case, ``{...}`` kept as inner text.

    Raises ValueError when the text does not start with ``ENVI``.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not lines or lines[0].strip().upper() != "ENVI":
        raise ValueError("does not start with 'ENVI'")
    out: dict[str, str] = {}
    i = 1
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith(";") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = " ".join(key.strip().lower().split())
        value = value.strip()
        if value.startswith("{"):
            while "}" not in value and i < len(lines):
                value += "\n" + lines[i]
                i += 1
            value = value[1 : value.rfind("}")] if "}" in value else value[1:]
        out[key] = value.strip()
    return out


def envi_list(value: str) -> list[str]:
    """A header list (``a, b, c``; braces optional) as stripped strings."""
    value = value.strip()
    if value.startswith("{") and value.endswith("}"):
        value = value[1:-1]
    return [v.strip() for v in value.replace("\n", " ").split(",") if v.strip()]


def _header_for(path: Path) -> Path | None:
    for cand in (
        path.with_suffix(".hdr"),
        path.with_suffix(".HDR"),
        path.with_name(path.name + ".hdr"),
        path.with_name(path.name + ".HDR"),
    ):
        if cand != path and cand.is_file():
            return cand
    return None


def _data_for_header(hdr: Path) -> Path | None:
    for cand in sorted(hdr.parent.glob(hdr.stem + "*")):
        if cand == hdr or not cand.is_file():
            continue
        if cand.stem == hdr.stem and cand.suffix.lower() in ENVI_SUFFIXES - {""}:
            return cand
    bare = hdr.with_suffix("")
    return bare if bare.is_file() else None


def is_generic_image(path: str | Path) -> bool:
    """True for a regular file that :func:`open_generic` would try: ``.tif/.tiff`` (any case),
    or an ENVI data file (``.bsq/.bil/.bip/.img/.dat`` or no extension) with a ``.hdr``."""
    path = Path(path)
    if path.name.startswith(".") or not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return True
    return suffix in ENVI_SUFFIXES and _header_for(path) is not None


# ----------------------------------------------------------------------------- metadata


def _lower(tags: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in tags.items()}


def _first(tags: dict[str, str], keys: tuple[str, ...]) -> tuple[str, str] | None:
    for k in keys:
        if k in tags and str(tags[k]).strip() != "":
            return k, str(tags[k]).strip()
    return None


def _unit_kind(unit: str | None) -> str | None:
    """'um', 'nm', 'index' or None (unknown) from a unit string."""
    if not unit:
        return None
    u = unit.strip().lower()
    if u in ("micrometers", "micrometres", "micrometer", "micrometre", "microns", "micron"):
        return "um"
    if u in ("um", "µm", "μm"):
        return "um"
    if u in ("nanometers", "nanometres", "nanometer", "nanometre", "nm"):
        return "nm"
    if u == "index":
        return "index"
    return None


def _floats(values: list[str], what: str, name: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in values], dtype=float)
    except ValueError as exc:
        raise ProductError(name, f"unparseable {what} value: {exc}") from exc


@dataclass
class _Spectral:
    wavelengths: list[str]
    unit: str | None  # 'um' / 'nm' / 'index' / None
    fwhms: list[str] | None
    bbl: list[str] | None
    source: str


def _from_envi_header(hdr: dict[str, str], count: int, name: str) -> _Spectral | None:
    if "wavelength" not in hdr:
        return None
    wl = envi_list(hdr["wavelength"])
    if len(wl) != count:
        raise ProductError(
            name, f"wavelength count != band count: header lists {len(wl)} for {count} bands"
        )
    return _Spectral(
        wavelengths=wl,
        unit=_unit_kind(hdr.get("wavelength units")),
        fwhms=envi_list(hdr["fwhm"]) if "fwhm" in hdr else None,
        bbl=envi_list(hdr["bbl"]) if "bbl" in hdr else None,
        source="ENVI header",
    )


def _from_band_tags(src, name: str) -> tuple[_Spectral | None, int]:
    """Per-band tags; also returns how many bands carry a wavelength tag."""
    tags = [_lower(src.tags(b)) for b in range(1, src.count + 1)]
    imagery = [_lower(src.tags(b, ns="IMAGERY")) for b in range(1, src.count + 1)]
    if all("central_wavelength_um" in t for t in imagery):
        return (
            _Spectral(
                wavelengths=[t["central_wavelength_um"] for t in imagery],
                unit="um",
                fwhms=[t["fwhm_um"] for t in imagery]
                if all("fwhm_um" in t for t in imagery)
                else None,
                bbl=[t["bbl"] for t in tags] if all("bbl" in t for t in tags) else None,
                source="band tags (IMAGERY domain)",
            ),
            src.count,
        )
    hits = [_first(t, _WL_KEYS) for t in tags]
    n_hit = sum(h is not None for h in hits)
    if n_hit != src.count:
        return None, n_hit
    key = hits[0][0]
    units = {_unit_kind((_first(t, _UNIT_KEYS) or ("", None))[1]) for t in tags}
    unit = "um" if key.endswith("_um") else "nm" if key.endswith("_nm") else None
    if unit is None and len(units) == 1:
        unit = units.pop()
    fw = [_first(t, _FWHM_KEYS) for t in tags]
    return (
        _Spectral(
            wavelengths=[h[1] for h in hits],
            unit=unit,
            fwhms=[f[1] for f in fw] if all(f is not None for f in fw) else None,
            bbl=[t["bbl"] for t in tags] if all("bbl" in t for t in tags) else None,
            source=f"band tags ({key})",
        ),
        n_hit,
    )


def _from_dataset_list(src, name: str) -> _Spectral | None:
    for ns in (None, "ENVI"):
        tags = _lower(src.tags(ns=ns) if ns else src.tags())
        hit = _first(tags, _WL_KEYS)
        if hit is None:
            continue
        wl = envi_list(hit[1])
        if len(wl) < 2 and src.count > 1:
            continue  # a single value is not a band list
        if len(wl) != src.count:
            raise ProductError(
                name,
                f"wavelength count != band count: dataset tag lists {len(wl)} "
                f"for {src.count} bands",
            )
        unit = _unit_kind((_first(tags, _UNIT_KEYS) or ("", None))[1])
        fw = _first(tags, _FWHM_KEYS)
        bbl = tags.get("bbl")
        return _Spectral(
            wavelengths=wl,
            unit=unit,
            fwhms=envi_list(fw[1]) if fw else None,
            bbl=envi_list(bbl) if bbl else None,
            source=f"dataset tags ({ns or 'default'} domain)",
        )
    return None


def _from_descriptions(src) -> _Spectral | None:
    matches = [_DESC_WL_RE.search(d or "") for d in src.descriptions]
    if not matches or not all(matches):
        return None
    kinds = {_unit_kind(m["unit"]) for m in matches}
    return _Spectral(
        wavelengths=[m["value"] for m in matches],
        unit=kinds.pop() if len(kinds) == 1 else None,
        fwhms=None,
        bbl=None,
        source="band descriptions",
    )


def _parse_time(text: str) -> datetime | None:
    t = text.strip().strip("{}").strip().strip('"')
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y/%m/%d %H:%M:%S"):
        try:
            return datetime.strptime(t, fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    iso = t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t
    if "." in iso:  # fromisoformat takes at most 6 fractional digits
        head, frac = iso.split(".", 1)
        digits = re.match(r"\d*", frac).group(0)
        iso = f"{head}.{digits[:6].ljust(6, '0')}{frac[len(digits) :]}"
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _times(
    tags: dict[str, str], hdr: dict[str, str], raw: dict[str, str]
) -> tuple[datetime | None, datetime | None]:
    merged = {**tags, **hdr}
    start = stop = None
    for key in _START_KEYS:
        if key in merged and (start := _parse_time(merged[key])) is not None:
            raw["start_time_source"] = key
            break
        if key in merged:
            raw.setdefault("unparsed_time", f"{key}={merged[key]}")
    for key in _STOP_KEYS:
        if key in merged and (stop := _parse_time(merged[key])) is not None:
            break
    if start is None:
        return None, None
    return start, stop or start


def _footprint(src, steps: int = 8) -> list[tuple[float, float]]:
    """Raster outline (rotation-aware, densified) reprojected to WGS84 (lon, lat)."""
    w, h = src.width, src.height
    cols, rows = [], []
    for a, b in (((0, 0), (w, 0)), ((w, 0), (w, h)), ((w, h), (0, h)), ((0, h), (0, 0))):
        for k in range(steps):
            f = k / steps
            cols.append(a[0] + (b[0] - a[0]) * f)
            rows.append(a[1] + (b[1] - a[1]) * f)
    xs, ys = zip(*(src.transform * (c, r) for c, r in zip(cols, rows, strict=True)), strict=True)
    lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    return [(float(x), float(y)) for x, y in zip(lon, lat, strict=True)]


_TIFF_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
                   13: 4, 16: 8, 17: 8, 18: 8}  # fmt: skip
_TIFF_DATA_TAGS = ((273, 279), (324, 325))  # (Strip|Tile)Offsets, (Strip|Tile)ByteCounts


def _tiff_problem(path: Path) -> str | None:
    """Why a (Big)TIFF file is truncated or malformed, or None when its structure fits.

    Walks the IFD chain and checks that every IFD, every out-of-line tag value and every
    strip/tile lies inside the file (GDAL opens such files and fails only on reading, or
    silently drops the tags that lie past the end, e.g. the georeferencing).
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(16)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            return "not a TIFF file (bad header)"
        end = "<" if head[:2] == b"II" else ">"
        magic = int.from_bytes(head[2:4], "little" if end == "<" else "big")
        if magic not in (42, 43):
            return "not a TIFF file (bad magic number)"
        big = magic == 43
        order = "little" if end == "<" else "big"
        if big and len(head) < 16:
            return "file is truncated inside the BigTIFF header"
        ifd = int.from_bytes(head[8:16] if big else head[4:8], order)
        n_size, e_size, v_size = (8, 20, 8) if big else (2, 12, 4)
        seen: set[int] = set()
        while ifd and len(seen) < 10000:
            if ifd in seen:
                return "TIFF directory chain loops"
            seen.add(ifd)
            fh.seek(ifd)
            raw_n = fh.read(n_size)
            if len(raw_n) < n_size:
                return f"file is truncated or corrupt: directory at byte {ifd} lies past the end ({size})"
            n = int.from_bytes(raw_n, order)
            block = fh.read(n * e_size + v_size)
            if len(block) < n * e_size + v_size:
                return f"file is truncated or corrupt inside the directory at byte {ifd}"
            entries = {}
            for k in range(n):
                e = block[k * e_size : (k + 1) * e_size]
                tag = int.from_bytes(e[0:2], order)
                typ = int.from_bytes(e[2:4], order)
                cnt = int.from_bytes(e[4 : 4 + v_size], order)
                val = e[4 + v_size :]
                nbytes = cnt * _TIFF_TYPE_SIZE.get(typ, 1)
                off = int.from_bytes(val, order) if nbytes > v_size else None
                if off is not None and off + nbytes > size:
                    return (
                        f"file is truncated or corrupt: TIFF tag {tag} data ends past byte {size}"
                    )
                entries[tag] = (typ, cnt, val, off)
            for off_tag, cnt_tag in _TIFF_DATA_TAGS:
                if off_tag in entries and cnt_tag in entries:
                    offs = _tiff_array(fh, entries[off_tag], end, v_size)
                    cnts = _tiff_array(fh, entries[cnt_tag], end, v_size)
                    if len(offs) == len(cnts) and len(offs):
                        last = int((offs + cnts).max())
                        if last > size:
                            return (
                                f"file is truncated or corrupt: image data runs to byte {last}, "
                                f"the file has {size}"
                            )
            ifd = int.from_bytes(block[n * e_size :], order)
    return None


def _tiff_array(fh, entry, end: str, v_size: int) -> np.ndarray:
    typ, cnt, val, off = entry
    dt = {3: "u2", 4: "u4", 16: "u8", 13: "u4", 18: "u8"}.get(typ)
    if dt is None:
        return np.zeros(0, dtype=np.uint64)
    if off is None:
        buf = val[: cnt * int(dt[1])]
    else:
        fh.seek(off)
        buf = fh.read(cnt * int(dt[1]))
    return np.frombuffer(buf, dtype=end + dt).astype(np.uint64)


def _envi_problem(src, path: Path) -> str | None:
    """Why an ENVI data file is shorter than its header says, or None."""
    size = path.stat().st_size
    hdr_offset = int(float((src.tags(ns="ENVI") or {}).get("header_offset", 0) or 0))
    need = hdr_offset + src.width * src.height * src.count * np.dtype(src.dtypes[0]).itemsize
    if size < need:
        return f"file is truncated: {size} bytes, the header describes {need}"
    return None


# ----------------------------------------------------------------------------- open


def _resolve(path: Path, name: str) -> tuple[Path, Path | None]:
    """(data file, ENVI header or None)."""
    suffix = path.suffix.lower()
    if suffix == ".hdr":
        data = _data_for_header(path)
        if data is None:
            raise ProductError(name, "ENVI header has no data file beside it")
        return data, path
    if suffix in TIFF_SUFFIXES:
        return path, None
    if suffix in ENVI_SUFFIXES:
        hdr = _header_for(path)
        if hdr is None:
            raise ProductError(name, "ENVI header (.hdr) not found beside the data file")
        return path, hdr
    raise ProductError(name, f"not a GeoTIFF or ENVI image (extension {path.suffix!r})")


def open_generic(path: str | Path) -> GenericScene:
    """Open a GeoTIFF or ENVI hyperspectral image as a :class:`GenericScene`.

    Raises :class:`ProductError` naming the file (``exc.product`` is the file name) when it
    is missing, empty, truncated or unreadable, has no CRS, has no wavelength information,
    lists a different number of wavelengths than bands, has non-finite, non-positive,
    duplicate or index-unit wavelengths, or values that cannot be reflectance x 10000 (see
    :mod:`spectralearth.enmap.values`). Georeferencing (north-up 30 m) and the 202-band
    match are the view's checks (:func:`spectralearth.enmap.view.open_view`).
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise ProductError(name, f"not a file: {path}")
    data, hdr_path = _resolve(path, name)
    name = data.name
    if data.stat().st_size == 0:
        raise ProductError(name, "file is empty (0 bytes)")
    hdr: dict[str, str] = {}
    if hdr_path is not None:
        try:
            hdr = parse_envi_header(hdr_path.read_text(errors="replace"))
        except (OSError, ValueError) as exc:
            raise ProductError(name, f"ENVI header {hdr_path.name} unreadable: {exc}") from exc

    if data.suffix.lower() in TIFF_SUFFIXES and (problem := _tiff_problem(data)):
        raise ProductError(name, problem)
    try:
        with rasterio.open(data) as src:
            if src.count == 0:
                raise ProductError(name, "image has no bands")
            if src.driver == "ENVI" and (problem := _envi_problem(src, data)):
                raise ProductError(name, problem)
            if src.crs is None:
                raise ProductError(name, "image has no CRS (georeferencing is required)")
            spectral = _from_envi_header(hdr, src.count, name) if hdr else None
            n_tagged = 0
            if spectral is None:
                spectral, n_tagged = _from_band_tags(src, name)
            spectral = spectral or _from_dataset_list(src, name) or _from_descriptions(src)
            if spectral is None:
                extra = f" ({n_tagged} of {src.count} bands tagged)" if n_tagged else ""
                raise ProductError(
                    name,
                    "no wavelength information: no per-band wavelength tags, ENVI header "
                    f"wavelengths or band descriptions with units{extra}",
                )
            sample = read_sample(src)
            grid = Grid.of(src)
            tags = _lower(src.tags())
            scales = np.array(src.scales, dtype=float)
            offsets = np.array(src.offsets, dtype=float)
            nodata = src.nodata
            dtype = np.dtype(src.dtypes[0])
            crs = src.crs
            footprint = _footprint(src)
    except RasterioError as exc:
        raise ProductError(name, f"unreadable image (corrupt or truncated): {exc}") from exc

    raw: dict[str, str] = {"wavelength_source": spectral.source, "source_dtype": str(dtype)}
    wl, fw = _wavelengths_nm(spectral, name, raw)
    count = len(wl)
    bad = np.zeros(count, dtype=bool)
    if spectral.bbl is not None:
        if len(spectral.bbl) == count:
            bad |= _floats(spectral.bbl, "bbl", name) == 0
        else:
            raw["bbl_ignored"] = f"{len(spectral.bbl)} entries for {count} bands"

    if nodata is None and "data ignore value" in hdr:
        nodata = float(_floats([hdr["data ignore value"]], "data ignore value", name)[0])
    scaled = bool(np.any(scales != 1.0) or np.any(offsets != 0.0))
    scales = np.where(np.isfinite(scales), scales, 1.0)
    offsets = np.where(np.isfinite(offsets), offsets, 0.0)
    rsf = hdr.get("reflectance scale factor") or tags.get("reflectance_scale_factor")
    if rsf:
        value = float(_floats([rsf], "reflectance scale factor", name)[0])
        if not (math.isfinite(value) and value > 0):
            raise ProductError(name, f"reflectance scale factor {rsf!r} is not positive")
        factor, declared, detect = 10000.0 / value, f"reflectance scale factor {rsf}", False
    elif dtype.kind == "f" or scaled:
        factor, declared, detect = 1.0, "GDAL scale/offset" if scaled else "", True
    else:
        factor, declared, detect = 1.0, "reflectance x 10000", False
    scaling, report = decide_scaling(
        name,
        sample,
        nodata,
        gain=scales * factor,
        offset=offsets * factor,
        declared=declared,
        detect_unit=detect,
        what="image",
    )
    bad |= report.empty_bands
    raw["nonfinite_in_sample"] = str(report.nonfinite)
    raw["source_scaling"] = scaling.source
    if scaling.p99 is not None:
        raw["sample_p99"] = f"{scaling.p99:.6g}"
    check_wavelengths(name, wl)

    start, stop = _times(tags, hdr, raw)
    meta = GenericMetadata(
        band_numbers=np.arange(1, count + 1),
        wavelengths=wl,
        fwhms=fw,
        gains=scaling.reflectance_gains,
        offsets=scaling.reflectance_offsets,
        bad_bands=bad,
        footprint_lonlat=footprint,
        start_time=start,
        stop_time=stop,
        projection=crs.to_string(),
        raw_fields=raw,
    )
    return GenericScene(
        path=data,
        name=data.stem,
        meta=meta,
        image_path=data,
        grid=grid,
        scaling=scaling,
        header_path=hdr_path,
        notes=_notes(scaling, report),
    )


def _notes(scaling: ValueScaling, report: SampleReport) -> list[str]:
    notes = [
        "no quality layers (a generic image): cloud, snow, haze, shadow and cirrus filters "
        "do not apply"
    ]
    if scaling.dtype != "int16" or not scaling.identity:
        notes.append(f"image {scaling.dtype}: {scaling.source}")
    return notes + report.notes


def _wavelengths_nm(spectral: _Spectral, name: str, raw: dict[str, str]):
    if spectral.unit == "index":
        raise ProductError(name, "wavelength units are 'Index' (band numbers, not wavelengths)")
    wl = _floats(spectral.wavelengths, "wavelength", name)
    if not np.all(np.isfinite(wl)):
        raise ProductError(name, "non-finite wavelengths (NaN or inf)")
    if np.any(wl <= 0):
        raise ProductError(name, "non-positive wavelengths")
    if spectral.fwhms is not None and len(spectral.fwhms) == len(wl):
        fw = _floats(spectral.fwhms, "fwhm", name)
    else:
        if spectral.fwhms is not None:
            raw["fwhm_ignored"] = f"{len(spectral.fwhms)} entries for {len(wl)} bands"
        fw = np.full(len(wl), np.nan)
    micro = wl.max() < 10 or (spectral.unit == "um" and wl.max() < 100)
    raw["wavelength_units"] = "micrometres (converted)" if micro else "nanometres"
    if micro:
        wl, fw = wl * 1000.0, fw * 1000.0
    return wl, fw
