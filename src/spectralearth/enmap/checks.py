"""Open-time checks shared by the readers and the 202-band view: band wavelengths, the grid
of every layer, georeferencing. Each raises :class:`ProductError` naming the product and
the field; none returns a silent default."""

from __future__ import annotations

import numpy as np

from spectralearth.enmap.scene import PIXEL_SIZE_M, Grid, ProductError

# Two centres closer than this are one wavelength listed twice (EnMAP's nearest neighbours,
# in the VNIR/SWIR overlap, are ~1 nm apart).
DUPLICATE_WAVELENGTH_NM = 0.01
# Pixel size and rotation tolerance: a millionth of the pixel (float noise of a transform).
GRID_TOLERANCE = 1e-6


def check_wavelengths(product: str, wavelengths: np.ndarray, field: str = "wavelengths") -> None:
    """Finite, positive centre wavelengths, none listed twice."""
    w = np.asarray(wavelengths, dtype=float)
    if w.ndim != 1 or len(w) == 0:
        raise ProductError(product, f"no band {field}")
    if not np.all(np.isfinite(w)):
        raise ProductError(product, f"band {field} contain NaN or inf")
    if np.any(w <= 0):
        raise ProductError(product, f"band {field} are not all positive")
    order = np.argsort(w, kind="stable")
    close = np.flatnonzero(np.diff(w[order]) < DUPLICATE_WAVELENGTH_NM)
    if len(close):
        pairs = [(int(order[i]) + 1, int(order[i + 1]) + 1) for i in close]
        shown = ", ".join(f"bands {a} and {b} ({w[a - 1]:.3f} nm)" for a, b in pairs[:3])
        raise ProductError(
            product,
            f"duplicate band {field}: {shown}{' ...' if len(pairs) > 3 else ''} "
            f"({len(pairs)} pairs closer than {DUPLICATE_WAVELENGTH_NM} nm)",
        )


def check_layer_grid(product: str, layer: str, image: Grid, grid: Grid) -> None:
    """A quality layer must lie on the image's grid: same size, transform and CRS."""
    if grid.matches(image):
        return
    if grid.crs != image.crs:
        why = "another CRS"
    elif (grid.width, grid.height) != (image.width, image.height):
        why = "another size"
    else:
        why = "another transform"
    raise ProductError(
        product,
        f"{layer} is not on the SPECTRAL_IMAGE grid ({why}): {layer} is {grid.describe()}, "
        f"the image {image.describe()}; quality masks must share the image's grid",
    )


def check_georeferencing(product: str, grid: Grid) -> int:
    """North-up, square 30 m pixels in a projected CRS with an EPSG code; returns the EPSG."""
    if grid.crs is None:
        raise ProductError(product, "the image has no CRS (georeferencing is required)")
    if not grid.crs.is_projected:
        raise ProductError(
            product, f"the image CRS {grid.crs.to_string()} is not projected (metres)"
        )
    t = grid.transform
    if abs(t.b) > GRID_TOLERANCE * abs(t.a) or abs(t.d) > GRID_TOLERANCE * abs(t.e):
        raise ProductError(
            product,
            f"the image grid is rotated (transform {tuple(round(v, 6) for v in t[:6])}): "
            "north-up pixels are required",
        )
    if t.a <= 0 or t.e >= 0:
        raise ProductError(
            product,
            f"the image grid is flipped (pixel size {t.a:g} x {t.e:g}): north-up pixels "
            "(positive width, negative height) are required",
        )
    width, height = t.a, -t.e
    if abs(width - height) > GRID_TOLERANCE * PIXEL_SIZE_M:
        raise ProductError(
            product, f"the image pixels are {width:g} x {height:g} m: square pixels are required"
        )
    if abs(width - PIXEL_SIZE_M) > GRID_TOLERANCE * PIXEL_SIZE_M:
        raise ProductError(
            product,
            f"the image pixels are {width:g} m: {PIXEL_SIZE_M:g} m pixels (the EnMAP grid) "
            "are required",
        )
    epsg = grid.crs.to_epsg()
    if epsg is None:
        raise ProductError(product, "the image has no EPSG-coded CRS")
    return int(epsg)
