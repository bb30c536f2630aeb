"""EnMAP band table, the 202-band SpectralEarth view, and Gaussian SRF resampling.

Bands are always matched by wavelength, never by index: the band order of an L2A product
depends on the processor (detector order VNIR then SWIR, or sorted by wavelength).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np

# Water-vapour ranges removed by SpectralEarth: native bands 127-141 (~1295-1519 nm) and
# 161-167 (~1739-1968 nm) of the wavelength-sorted nominal table. Bounds sit half-way
# between the last kept and first removed nominal centres, so a product whose centres
# shift by a few nm (smile, recalibration) still maps to the same view.
WATER_VAPOUR_RANGES_NM: tuple[tuple[float, float], ...] = ((1289.3, 1524.9), (1733.7, 1972.7))
N_VIEW_BANDS = 202
# Largest allowed distance between a nominal centre and the product band matched to it.
MATCH_TOLERANCE_NM = 5.0


@dataclass(frozen=True)
class BandTable:
    """Centre wavelengths and FWHMs (nm), optionally with detector names."""

    wavelengths: np.ndarray
    fwhms: np.ndarray
    detectors: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.wavelengths)

    def sorted(self) -> tuple[BandTable, np.ndarray]:
        """The table sorted by wavelength, and the permutation that sorts it."""
        order = np.argsort(self.wavelengths, kind="stable")
        dets = tuple(self.detectors[i] for i in order) if self.detectors else ()
        return BandTable(self.wavelengths[order], self.fwhms[order], dets), order


def enmap_nominal() -> BandTable:
    """EnMAP's 224 nominal bands (sorted by wavelength), from the packaged table."""
    text = resources.files("spectralearth.resources").joinpath("enmap_bands.csv").read_text()
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    return BandTable(
        np.array([float(r["wavelength_nm"]) for r in rows]),
        np.array([float(r["fwhm_nm"]) for r in rows]),
        tuple(r["detector"] for r in rows),
    )


# Packaged band tables of the other sensors of SpectralEarth's downstream datasets (generated
# approximations from published sensor facts; provenance in each file's header).
SENSOR_TABLES = {"DESIS": "desis_bands.csv", "Hyperion": "hyperion_bands.csv"}


def sensor_bands(sensor: str) -> BandTable:
    """Band table of ``EnMAP`` (the 224 nominal bands), ``DESIS`` (235) or ``Hyperion`` (198)."""
    if sensor == "EnMAP":
        return enmap_nominal()
    if sensor not in SENSOR_TABLES:
        raise KeyError(
            f"no band table for sensor {sensor!r}; have EnMAP, {', '.join(SENSOR_TABLES)}"
        )
    text = resources.files("spectralearth.resources").joinpath(SENSOR_TABLES[sensor]).read_text()
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    return BandTable(
        np.array([float(r["wavelength_nm"]) for r in rows]),
        np.array([float(r["fwhm_nm"]) for r in rows]),
        tuple(r["detector"] for r in rows),
    )


def in_water_vapour(wavelengths: np.ndarray) -> np.ndarray:
    """True where a centre wavelength falls in a removed water-vapour range."""
    w = np.asarray(wavelengths, dtype=float)
    mask = np.zeros(w.shape, dtype=bool)
    for lo, hi in WATER_VAPOUR_RANGES_NM:
        mask |= (w > lo) & (w < hi)
    return mask


def view_wavelengths() -> np.ndarray:
    """Nominal centre wavelengths of the 202-band SpectralEarth view."""
    w = enmap_nominal().wavelengths
    kept = w[~in_water_vapour(w)]
    assert len(kept) == N_VIEW_BANDS, len(kept)
    return kept


class BandMatchError(ValueError):
    """A product's bands cannot be matched to the 202-band view."""


def select_view(wavelengths: np.ndarray, tolerance_nm: float = MATCH_TOLERANCE_NM) -> np.ndarray:
    """Indices into ``wavelengths`` (any order) giving the 202-band view, in view order.

    Each nominal view wavelength is matched to the nearest product band; the match must be
    within ``tolerance_nm`` and one-to-one, otherwise :class:`BandMatchError` says which
    wavelengths failed.
    """
    w = np.asarray(wavelengths, dtype=float)
    if w.ndim != 1 or len(w) == 0:
        raise BandMatchError("no band wavelengths given")
    if not np.all(np.isfinite(w)):
        raise BandMatchError("band wavelengths contain NaN or inf")
    from scipy.optimize import linear_sum_assignment

    target = view_wavelengths()
    dist = np.abs(w[None, :] - target[:, None])
    # One-to-one matching with least total shift: in the VNIR/SWIR overlap (~900-1000 nm)
    # neighbouring centres are only 1-2 nm apart, so nearest-neighbour alone can collide.
    if len(w) >= len(target):
        rows, cols = linear_sum_assignment(dist)
        idx = cols[np.argsort(rows)]
    else:
        idx = dist.argmin(axis=1)
    best = dist[np.arange(len(target)), idx]
    missing = target[best > tolerance_nm]
    if len(missing):
        shown = ", ".join(f"{x:.1f}" for x in missing[:5])
        raise BandMatchError(
            f"{len(missing)} of {N_VIEW_BANDS} view bands have no product band within "
            f"{tolerance_nm} nm (e.g. {shown} nm); the product has {len(w)} bands "
            f"spanning {w.min():.1f}-{w.max():.1f} nm"
        )
    if len(np.unique(idx)) != len(idx):
        raise BandMatchError("two view bands matched the same product band")
    return idx


def gaussian_srf_matrix(
    source_wavelengths: np.ndarray, centres: np.ndarray, fwhms: np.ndarray
) -> np.ndarray:
    """Row-normalised Gaussian spectral response matrix [n_target, n_source].

    ``spectra @ M.T`` resamples spectra sampled at ``source_wavelengths`` to bands with the
    given centres and FWHMs. Source samples need not be regular; weights include the local
    sample spacing so irregular grids integrate correctly.
    """
    src = np.asarray(source_wavelengths, dtype=float)
    sigma = np.asarray(fwhms, dtype=float) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    spacing = np.gradient(src) if len(src) > 1 else np.ones_like(src)
    z = (src[None, :] - np.asarray(centres, dtype=float)[:, None]) / sigma[:, None]
    m = np.exp(-0.5 * z**2) * spacing[None, :]
    norm = m.sum(axis=1, keepdims=True)
    if np.any(norm <= 0):
        raise ValueError("a target band lies outside the source wavelength range")
    return m / norm


def resample(
    spectra: np.ndarray, source_wavelengths: np.ndarray, centres: np.ndarray, fwhms: np.ndarray
) -> np.ndarray:
    """Resample spectra [..., n_source] to bands with Gaussian SRFs -> [..., n_target]."""
    m = gaussian_srf_matrix(source_wavelengths, centres, fwhms)
    return np.asarray(spectra, dtype=float) @ m.T


def nearest_band(wavelengths: np.ndarray, target_nm: float) -> int:
    """Index of the band whose centre is closest to ``target_nm``."""
    return int(np.abs(np.asarray(wavelengths, dtype=float) - target_nm).argmin())


# Bands nearest these wavelengths give true-colour quicklooks (red, green, blue).
RGB_NM = (641.0, 556.0, 468.0)
