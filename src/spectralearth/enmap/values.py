"""Stored values -> int16 reflectance x 10000: decided once per scene at open time, shared by
the L2A and the generic reader.

How the conversion is decided (:func:`decide_scaling`)

* The stored values are multiplied by a per-band gain and offset that the product declares
  (L2A: ``GainOfBand``/``OffsetOfBand`` x 10000 of METADATA.XML; generic images: GDAL
  scale/offset, or ``reflectance scale factor``). Where the unit is not declared (float
  images, GDAL-scaled images without a scale factor), values whose 99th percentile in the
  open-time sample is below :data:`UNIT_REFLECTANCE_P99` are taken as 0..1 reflectance
  (x 10000), others as reflectance x 10000 already.
* The result must be reflectance x 10000, or the product is refused with the reason:
  an integer type too small to hold reflectance 1.0 with the declared gain (uint8 with
  gain 0.0001), or a sample whose 99th percentile lies outside :data:`PLAUSIBLE_P99`
  (percent, radiance, x 100000, ...). Complex images are refused.
* Nodata is the file's own nodata tag (any dtype; NaN for floats), never an assumed -32768.

How values are converted (:meth:`ValueScaling.convert`)

Rounded (``np.rint``); the file's nodata, NaN/inf and values outside [-32767, 32767] become
:data:`~spectralearth.enmap.scene.NODATA` (never clipped or wrapped). NaN/inf that were not
the declared nodata and out-of-range values are counted (``nonfinite``, ``out_of_range``).

The open-time sample (:func:`read_sample`) is the whole image when it is at most
``SAMPLE_SIDE`` px on each side, otherwise ``SAMPLE_GRID`` x ``SAMPLE_GRID`` windows of
``SAMPLE_WINDOW`` px spread evenly over the image, each moved into one of the file's tiles
(full-width strips for striped files).
Bands with no valid value in it are flagged bad: exact for small images, a heuristic for
large ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rasterio.windows import Window

from spectralearth.enmap.scene import NODATA, ProductError

SAMPLE_SIDE = 256
SAMPLE_GRID, SAMPLE_WINDOW = 3, 64  # larger images: 3 x 3 windows of 64 x 64 px
SAMPLE_STRIP_ROWS = 4  # larger striped images: 3 full-width strips of 4 rows
# 99th percentile of valid values below this (unit not declared): 0..1 reflectance.
UNIT_REFLECTANCE_P99 = 2.0
# 99th percentile of valid reflectance x 10000 a scene can have: 1 % (the darkest water
# scene is brighter in its blue bands) to 150 % (snow and cloud tops stay below).
PLAUSIBLE_P99 = (100.0, 15000.0)
INT16_VALID_MIN, INT16_VALID_MAX = -32767, 32767
REFLECTANCE_ONE = 10000.0  # reflectance 1.0 in reflectance x 10000
PERCENTILE_PIXELS = 1024  # pixels of the sample a band contributes to the percentiles


def nodata_mask(raw: np.ndarray, nodata: float | None) -> np.ndarray:
    """Where ``raw`` holds the declared nodata value (NaN matches NaN for floats)."""
    if nodata is None:
        return np.zeros(raw.shape, dtype=bool)
    if isinstance(nodata, float) and math.isnan(nodata):
        return np.isnan(raw) if raw.dtype.kind == "f" else np.zeros(raw.shape, dtype=bool)
    return raw == nodata


@dataclass(eq=False)
class ValueScaling:
    """Stored values -> reflectance x 10000: ``x = stored * gain[b] + offset[b]``.

    ``source`` says how the factors were decided (shown in the catalogue's ``value_scaling``);
    ``p99`` is the sample's 99th percentile of valid values after conversion (None when the
    sample held no valid value).
    """

    dtype: str
    nodata: float | None
    gain: np.ndarray
    offset: np.ndarray
    source: str
    p99: float | None = None

    @property
    def identity(self) -> bool:
        return bool(np.all(self.gain == 1.0) and np.all(self.offset == 0.0))

    @property
    def reflectance_gains(self) -> np.ndarray:
        """Stored value -> reflectance (what STAC's ``raster:bands`` scale says)."""
        return self.gain * 1e-4

    @property
    def reflectance_offsets(self) -> np.ndarray:
        return self.offset * 1e-4

    def convert(self, raw: np.ndarray, bands=None) -> tuple[np.ndarray, int, int]:
        """``raw`` [bands, rows, cols] of file bands ``bands`` (0-based; all when None) ->
        (int16 reflectance x 10000, #non-finite, #out of range)."""
        idx = slice(None) if bands is None else np.asarray(bands, dtype=int)
        return to_int16(raw, self.gain[idx], self.offset[idx], self.nodata)


def to_int16(
    raw: np.ndarray, gain: np.ndarray, offset: np.ndarray, nodata: float | None
) -> tuple[np.ndarray, int, int]:
    """Stored values -> (int16 reflectance x 10000, #non-finite, #out of int16 range)."""
    identity = bool(np.all(gain == 1.0) and np.all(offset == 0.0))
    if identity and raw.dtype == np.int16:
        if nodata is None or nodata == NODATA:
            return raw, 0, 0  # the official L2A case: nothing to do (a fresh array per read)
        out = raw.copy()
        out[nodata_mask(raw, nodata)] = NODATA
        # a stored -32768 that is not the declared nodata still reads as nodata downstream
        return out, 0, 0
    nod = nodata_mask(raw, nodata)
    work = np.float64 if raw.dtype in (np.float64, np.int64, np.uint64) else np.float32
    vals = raw.astype(work, copy=True)
    if not identity:
        vals *= np.asarray(gain, dtype=work)[:, None, None]
        vals += np.asarray(offset, dtype=work)[:, None, None]
    bad = ~np.isfinite(vals) & ~nod
    nonfinite = int(bad.sum())
    vals[nod | bad] = 0
    np.rint(vals, out=vals)
    over = (vals < INT16_VALID_MIN) | (vals > INT16_VALID_MAX)
    out_of_range = int(over.sum())
    invalid = nod | bad | over
    vals[invalid] = 0
    out = vals.astype(np.int16)
    out[invalid] = NODATA
    return out, nonfinite, out_of_range


def read_sample(src) -> np.ndarray:
    """The whole image when small, else SAMPLE_GRID x SAMPLE_GRID windows side by side.

    Windows of SAMPLE_WINDOW pixels are spread evenly over the image and concatenated along
    the column axis -> [bands, rows, n_windows * cols]. A striped image (DLR's uncompressed
    GeoTIFFs) gives SAMPLE_GRID full-width strips of SAMPLE_STRIP_ROWS rows instead, since
    any window there reads whole rows. Far cheaper than a decimated read,
    which makes GDAL visit every block of every band (~1 min for a 1024 px x 224 band
    tiled float32 image here).
    """
    if src.width <= SAMPLE_SIDE and src.height <= SAMPLE_SIDE:
        return src.read()
    if src.block_shapes[0][1] >= src.width:  # striped: a window costs its full-width strips
        rows = min(src.height, SAMPLE_STRIP_ROWS)
        starts = np.linspace(0, src.height - rows, SAMPLE_GRID).round().astype(int)
        parts = [src.read(window=Window(0, int(r), src.width, rows)) for r in starts]
        return np.concatenate(parts, axis=2)
    wh, ww = min(src.height, SAMPLE_WINDOW), min(src.width, SAMPLE_WINDOW)
    bh, bw = src.block_shapes[0]
    rows = [_in_one_block(r, wh, bh) for r in np.linspace(0, src.height - wh, SAMPLE_GRID)]
    cols = [_in_one_block(c, ww, bw) for c in np.linspace(0, src.width - ww, SAMPLE_GRID)]
    parts = [src.read(window=Window(c, r, ww, wh)) for r in rows for c in cols]
    return np.concatenate(parts, axis=2)


def _in_one_block(start: float, size: int, block: int) -> int:
    """``start`` moved back (by less than ``size``) so that a window of ``size`` px lies in
    as few of the file's blocks as it can: a window across a tile edge costs every band
    another tile to decompress (the sample of a deflate-tiled 1200 px scene fell from 16 to
    9 tiles a band)."""
    start = int(round(start))
    first = start // block * block
    if size > block:  # spans several blocks anyway: start on a block edge
        return first
    return max(first, min(start, first + block - size))


@dataclass
class SampleReport:
    """What the open-time sample showed: bands without a valid value, invalid values."""

    empty_bands: np.ndarray
    nonfinite: int = 0
    out_of_range: int = 0
    notes: list[str] = field(default_factory=list)


def decide_scaling(
    product: str,
    sample: np.ndarray,
    nodata: float | None,
    *,
    gain: np.ndarray,
    offset: np.ndarray,
    declared: str,
    detect_unit: bool,
    what: str = "SPECTRAL_IMAGE",
) -> tuple[ValueScaling, SampleReport]:
    """The conversion of one image (see the module doc), checked on its open-time sample.

    ``gain``/``offset`` (per band) map stored values to reflectance x 10000 as the product
    declares them (``declared`` names where they come from), or to a physical value of
    unknown unit when ``detect_unit`` is set. Raises :class:`ProductError` naming
    ``product`` and ``what`` when the result cannot be reflectance x 10000.
    """
    dtype = sample.dtype
    if dtype.kind not in "iuf":
        raise ProductError(product, f"{what} has values of type {dtype}, not real numbers")
    gain = np.asarray(gain, dtype=float)
    offset = np.asarray(offset, dtype=float)
    if not (np.all(np.isfinite(gain)) and np.all(np.isfinite(offset))):
        raise ProductError(product, f"{what}: {declared} holds NaN or inf")
    if np.any(gain == 0):
        raise ProductError(product, f"{what}: {declared} has a zero gain")
    nod = nodata_mask(sample, nodata)
    finite = np.isfinite(sample) if dtype.kind == "f" else np.ones(sample.shape, dtype=bool)
    valid = ~nod & finite
    report = SampleReport(
        empty_bands=~valid.any(axis=(1, 2)), nonfinite=int((~finite & ~nod).sum())
    )
    # the decisions need a percentile, not every value: a regular grid of the sample's
    # pixels, at most PERCENTILE_PIXELS of them, in every band
    step = max(1, math.ceil(math.sqrt(sample.shape[1] * sample.shape[2] / PERCENTILE_PIXELS)))
    sub, sub_valid = sample[:, ::step, ::step], valid[:, ::step, ::step]
    band_of = np.broadcast_to(np.arange(sample.shape[0])[:, None, None], sub.shape)[sub_valid]
    phys = sub[sub_valid].astype(np.float64) * gain[band_of] + offset[band_of]
    source = declared
    if detect_unit:
        factor = 1.0
        if len(phys) and float(np.percentile(phys, 99)) < UNIT_REFLECTANCE_P99:
            factor = REFLECTANCE_ONE
        unit = f"reflectance {'0..1' if factor != 1 else 'x 10000'}"
        source = f"{declared} -> {unit}" if declared else unit
        gain, offset, phys = gain * factor, offset * factor, phys * factor
    # exact identity where the product is 1 up to float noise (e.g. GDAL scale 1e-4 x 10000)
    gain = np.where(np.isclose(gain, 1.0, rtol=1e-9, atol=0), 1.0, gain)
    offset = np.where(np.abs(offset) < 1e-9, 0.0, offset)

    if dtype.kind in "iu":
        top = np.iinfo(dtype).max * gain + offset
        if np.any(top < REFLECTANCE_ONE):
            b = int(np.argmax(top < REFLECTANCE_ONE))
            raise ProductError(
                product,
                f"{what} is {dtype} (at most {np.iinfo(dtype).max}) with {declared}: band "
                f"{b + 1} can hold reflectance up to {top[b] / REFLECTANCE_ONE:.4g} only, "
                "so the values are not reflectance x 10000 (declare the gain, e.g. "
                "GainOfBand or a reflectance scale factor)",
            )
    phys = np.rint(phys)
    p99 = None
    if len(phys):  # out-of-range values count: they say the scale is wrong
        p99 = float(np.percentile(phys, 99))
        lo, hi = PLAUSIBLE_P99
        if not lo <= p99 <= hi:
            raise ProductError(
                product,
                f"{what} values are not reflectance x 10000: with {source} the 99th "
                f"percentile of valid values is {p99:.6g}, outside {lo:g}..{hi:g} "
                "(reflectance 1 % .. 150 %); declare the scale or convert the image",
            )
    identity_int16 = dtype == np.int16 and bool(np.all(gain == 1) and np.all(offset == 0))
    if not identity_int16:  # count exactly (the subsample can miss a pixel): not official
        _, _, report.out_of_range = to_int16(sample, gain, offset, nodata)
    if report.nonfinite:
        report.notes.append(f"{report.nonfinite} NaN/inf values in the sample read as nodata")
    if report.out_of_range:
        report.notes.append(
            f"{report.out_of_range} values outside the int16 range in the sample read as nodata"
        )
    scaling = ValueScaling(str(dtype), nodata, gain, offset, source, p99)
    return scaling, report
