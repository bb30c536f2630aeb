"""What curation, prediction and the catalogue see of a scene: the :class:`Scene` protocol,
its pixel :class:`Grid`, the one error type and the constants every reader shares.

Both readers (:mod:`~spectralearth.enmap.l2a` for EnMAP L2A products,
:mod:`~spectralearth.enmap.generic` for any GeoTIFF/ENVI image with band wavelengths)
return objects of this shape; :mod:`~spectralearth.enmap.archive` finds and opens them and
:mod:`~spectralearth.enmap.view` gives their 202-band view. This module imports no other
module of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

# int16 reflectance x 10000, the value every reader returns for "no valid reflectance"
NODATA = -32768
# The quality layers of an L2A product, in the order the reader looks for them.
QL_LAYERS = (
    "QL_QUALITY_CLOUD",
    "QL_QUALITY_SNOW",
    "QL_QUALITY_HAZE",
    "QL_QUALITY_CLOUDSHADOW",
    "QL_QUALITY_CIRRUS",
    "QL_PIXELMASK",
)
# Catalogue / patch-index column of each cover fraction, and the layer it comes from.
COVER_FRACTIONS = {
    "cloud_frac": "QL_QUALITY_CLOUD",
    "snow_frac": "QL_QUALITY_SNOW",
    "haze_frac": "QL_QUALITY_HAZE",
    "cloudshadow_frac": "QL_QUALITY_CLOUDSHADOW",
    "cirrus_frac": "QL_QUALITY_CIRRUS",
}
# Ground sampling distance of the EnMAP L2A grid (and of every scene the pipeline curates).
PIXEL_SIZE_M = 30.0
# What to do with an L2A product that lacks some of its quality layers (params
# ``curate.missing_masks``): refuse it, or curate it with those filters off (logged).
MISSING_MASKS = ("refuse", "ignore")


class ProductError(ValueError):
    """A product cannot be read; the message names the product and the reason."""

    def __init__(self, product: str, reason: str):
        super().__init__(f"{product}: {reason}")
        self.product = product
        self.reason = reason


@dataclass(frozen=True)
class Grid:
    """A raster's pixel grid: size, affine transform (pixel -> map) and CRS."""

    width: int
    height: int
    transform: Affine
    crs: CRS | None

    @classmethod
    def of(cls, src) -> Grid:
        """The grid of an open rasterio dataset."""
        return cls(int(src.width), int(src.height), src.transform, src.crs)

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Pixel width and height in map units (lengths of the transform's column vectors)."""
        t = self.transform
        return math.hypot(t.a, t.d), math.hypot(t.b, t.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the grid's outline in map units."""
        xs, ys = zip(
            *(self.transform * (c, r) for c in (0, self.width) for r in (0, self.height)),
            strict=True,
        )
        return min(xs), min(ys), max(xs), max(ys)

    def describe(self) -> str:
        """E.g. ``512 x 512 px of 30 x 30 m, origin (366000.0, 5810010.0), EPSG:32633``."""
        w, h = self.pixel_size
        t = self.transform
        rotated = ", rotated" if (t.b or t.d) else ""
        crs = self.crs.to_string() if self.crs is not None else "no CRS"
        return (
            f"{self.width} x {self.height} px of {w:g} x {h:g} m{rotated}, "
            f"origin ({t.c:.1f}, {t.f:.1f}), {crs}"
        )

    def matches(self, other: Grid) -> bool:
        """Same size, CRS and transform (up to a thousandth of a pixel)."""
        if (self.width, self.height) != (other.width, other.height):
            return False
        if (self.crs is None) != (other.crs is None):
            return False
        if self.crs is not None and self.crs != other.crs:
            return False
        tol = 1e-3 * max(min(self.pixel_size), 1e-12)
        return all(
            abs(a - b) <= tol for a, b in zip(self.transform[:6], other.transform[:6], strict=True)
        )


class SceneMetadata(Protocol):
    """The metadata fields every reader fills (file band order; wavelengths in nm)."""

    band_numbers: np.ndarray
    wavelengths: np.ndarray
    fwhms: np.ndarray
    gains: np.ndarray  # stored value -> reflectance, as the product declares it
    offsets: np.ndarray
    bad_bands: np.ndarray  # bool: declared bad, or no valid pixel in the open-time sample
    footprint_lonlat: list[tuple[float, float]]
    start_time: datetime | None
    stop_time: datetime | None
    cover: dict[str, float]  # percent, NaN where the product does not say
    processor_version: str
    raw_fields: dict[str, str]


@runtime_checkable
class Scene(Protocol):
    """A scene as curation, prediction and the catalogue use it.

    ``read`` always returns **int16 reflectance x 10000** with :data:`NODATA` where a value
    is missing or invalid, whatever the file stores (the conversion is decided once at open
    time, see :mod:`spectralearth.enmap.values`). ``quality_layers`` are the QL layers the
    format carries (all of :data:`QL_LAYERS` for L2A, none for a generic image);
    ``ql_paths`` those actually present. ``notes`` say what the reader decided (scaling,
    values read as nodata) for the catalogue and the logs.
    """

    path: Path
    name: str
    source: str  # "enmap_l2a" or "generic"
    meta: SceneMetadata
    grid: Grid
    scaling: Any  # a spectralearth.enmap.values.ValueScaling: how read() converts values
    image_path: str | Path
    ql_paths: dict[str, str | Path]
    quality_layers: tuple[str, ...]
    counts: dict[str, int]
    notes: list[str]

    @property
    def scene_key(self) -> str: ...

    def read(self, window: Window | None = None, bands=None) -> np.ndarray: ...

    def read_mask(self, layer: str, window: Window | None = None) -> np.ndarray: ...

    def read_reflectance(self, window: Window | None = None) -> np.ndarray: ...

    def profile(self) -> dict: ...
