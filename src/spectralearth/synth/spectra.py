"""Spectral library of the synthetic archive, resampled to EnMAP's 224 bands.

Measured spectra come from earthlib (Ryan et al., "earthlib: a global spectral library";
7,261 measured and simulated spectra of soils, impervious surfaces, vegetation,
non-photosynthetic vegetation and char, 400-2450 nm at 10 nm, installed with the
``earthlib`` package as ``earthlib/data/spectra.csv`` + ``spectra.sli``). earthlib has no
water, snow or cloud spectra, so those are analytic models (see :func:`water_spectra`,
:func:`snow_spectra`, :func:`cloud_spectra`).

Land-cover classes (:data:`LANDCOVER_CLASSES`, ids 1..K, 0 = no label) each draw from their
own subset of spectra, so they are spectrally separable but vary within the class.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from spectralearth.bands import enmap_nominal, resample

# Land-cover classes of the synthetic archive; the class id is the position + 1 (0 = no label).
LANDCOVER_CLASSES: tuple[str, ...] = (
    "water",
    "forest",
    "cropland",
    "grassland",
    "bare_soil",
    "built_up",
    "non_photosynthetic_vegetation",
    "burned",
)
# Spectra used by the scene simulator that are not land-cover classes.
EXTRA_SPECTRA: tuple[str, ...] = ("snow", "cloud")

# Working grid: 2 nm from 380 to 2500 nm, fine enough for EnMAP's 6-11 nm FWHMs.
GRID_NM = np.arange(380.0, 2500.0 + 1e-9, 2.0)


def class_ids() -> dict[int, str]:
    """``{id: name}`` of the land-cover classes (what ``classes.json`` holds)."""
    return {i + 1: name for i, name in enumerate(LANDCOVER_CLASSES)}


def earthlib_data_dir() -> Path:
    """The installed earthlib package's data folder (found without importing earthlib,
    whose ``__init__`` pulls in pandas and the ``spectral`` package)."""
    spec = importlib.util.find_spec("earthlib")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "earthlib is not installed; the synthetic archive needs its spectral library "
            "(pip install earthlib==1.1.0)"
        )
    for loc in spec.submodule_search_locations:
        data = Path(loc) / "data"
        if (data / "spectra.sli").is_file():
            return data
    raise FileNotFoundError("earthlib is installed but earthlib/data/spectra.sli is missing")


def _read_envi_header(path: Path) -> dict[str, str]:
    text = path.read_text()
    fields: dict[str, str] = {}
    # key = value, or key = { multi-line list }
    for m in re.finditer(r"^\s*([^=\n]+?)\s*=\s*(\{[^}]*\}|[^\n]*)", text, re.M):
        fields[m.group(1).strip().lower()] = m.group(2).strip()
    return fields


def read_earthlib() -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """earthlib's full library: spectra [7261, 180] (reflectance 0..1), wavelengths (nm),
    and one metadata row (NAME, LEVEL_1..4, SOURCE, ...) per spectrum."""
    data = earthlib_data_dir()
    hdr = _read_envi_header(data / "spectra.sli.hdr")
    samples, lines = int(hdr["samples"]), int(hdr["lines"])
    if int(hdr.get("data type", "4")) != 4 or int(hdr.get("byte order", "0")) != 0:
        raise ValueError("expected earthlib spectra.sli as little-endian float32")
    wl = np.array([float(x) for x in hdr["wavelength"].strip("{} ").split(",")])
    if wl.max() < 100:  # the header gives micrometres
        wl = wl * 1000.0
    spectra = np.fromfile(data / "spectra.sli", dtype="<f4").reshape(lines, samples)
    with open(data / "spectra.csv", newline="") as fh:
        meta = list(csv.DictReader(fh))
    if len(meta) != lines or len(wl) != samples:
        raise ValueError("earthlib spectra.csv / spectra.sli.hdr do not match spectra.sli")
    return spectra.astype(np.float64), wl, meta


def to_grid(spectra: np.ndarray, wavelengths: np.ndarray) -> np.ndarray:
    """Linear interpolation onto :data:`GRID_NM`; fills the water-vapour gaps of the
    source (1360-1450, 1800-1950 nm) and holds the end values beyond 400 / 2450 nm."""
    spectra = np.atleast_2d(spectra)
    out = np.empty((spectra.shape[0], GRID_NM.size))
    for i, s in enumerate(spectra):
        out[i] = np.interp(GRID_NM, wavelengths, s)
    return out


def _anchors(points: list[tuple[float, float]]) -> np.ndarray:
    w, r = np.array(points).T
    return np.interp(GRID_NM, w, r)


# Pure-water absorption (1/m), a coarse log-interpolated table after Pope & Fry (1997) and
# Kou et al. (1993); beyond 1000 nm water is opaque for remote sensing purposes.
_AW = [
    (380, 0.011),
    (400, 0.0066),
    (450, 0.0092),
    (500, 0.0204),
    (550, 0.0565),
    (600, 0.2224),
    (650, 0.34),
    (700, 0.65),
    (750, 2.47),
    (800, 2.07),
    (850, 4.3),
    (900, 6.8),
    (950, 39.0),
    (1000, 36.0),
    (1100, 20.0),
    (1200, 100.0),
    (2500, 1000.0),
]


def water_spectra(rng: np.random.Generator, n: int = 48) -> np.ndarray:
    """Analytic water reflectance on :data:`GRID_NM` (Gordon et al. 1988 model).

    Varies chlorophyll, CDOM and suspended-sediment backscatter from clear to turbid lakes:
    a few % in blue/green, a red/NIR shoulder for turbid water, ~0 beyond 900 nm apart
    from a small residual surface reflection.
    """
    w = GRID_NM
    lw, la = np.log(np.array(_AW)).T
    a_w = np.exp(np.interp(np.log(w), lw, la))
    b_w = 0.0038 * (400.0 / w) ** 4.32
    # chlorophyll specific absorption: peaks at ~440 and ~675 nm
    a_chl_star = 0.04 * np.exp(-0.5 * ((w - 440) / 35) ** 2) + 0.02 * np.exp(
        -0.5 * ((w - 675) / 12) ** 2
    )
    out = np.empty((n, w.size))
    for i in range(n):
        chl = np.exp(rng.uniform(np.log(0.5), np.log(30.0)))
        cdom = rng.uniform(0.01, 0.3) * np.exp(-0.015 * (w - 440))
        bbp = np.exp(rng.uniform(np.log(0.002), np.log(0.04))) * (550.0 / w)
        a = a_w + chl * a_chl_star + cdom
        bb = 0.5 * b_w + bbp
        u = bb / (a + bb)
        rrs = 0.089 * u + 0.125 * u**2
        big_rrs = 0.52 * rrs / (1 - 1.7 * rrs)
        surface = rng.uniform(0.001, 0.006)  # residual sky glint after correction
        out[i] = np.pi * big_rrs + surface
    return out


# Medium-grain clean snow (anchor points read off typical field spectra): ~0.95 in the VIS,
# ice absorption at 1030, 1260, 1500 and 2000 nm.
_SNOW = [
    (380, 0.95),
    (500, 0.97),
    (600, 0.96),
    (700, 0.94),
    (800, 0.90),
    (900, 0.84),
    (1000, 0.72),
    (1030, 0.63),
    (1100, 0.69),
    (1200, 0.56),
    (1260, 0.43),
    (1300, 0.46),
    (1400, 0.20),
    (1500, 0.04),
    (1550, 0.05),
    (1600, 0.08),
    (1700, 0.12),
    (1800, 0.14),
    (1850, 0.10),
    (1950, 0.02),
    (2000, 0.01),
    (2100, 0.04),
    (2250, 0.10),
    (2300, 0.08),
    (2400, 0.03),
    (2500, 0.02),
]


def snow_spectra(rng: np.random.Generator, n: int = 32) -> np.ndarray:
    """Snow on :data:`GRID_NM`: bright in the VIS, dark near 1500-1600 and 2000 nm.

    Grain size is varied by raising the clean spectrum to a power (larger grains absorb
    more, mostly in the NIR/SWIR), impurities by a small VIS darkening.
    """
    base = _anchors(_SNOW)
    out = np.empty((n, GRID_NM.size))
    for i in range(n):
        grain = rng.uniform(0.7, 1.6)
        dirt = 1.0 - rng.uniform(0.0, 0.12) * np.exp(-(GRID_NM - 380) / 400.0)
        out[i] = base**grain * dirt
    return out


# Optically thick liquid-water cloud: flat and bright, mild absorption at 1.5 / 2.0 um.
_CLOUD = [
    (380, 0.80),
    (600, 0.82),
    (900, 0.81),
    (1100, 0.78),
    (1250, 0.76),
    (1450, 0.62),
    (1550, 0.64),
    (1700, 0.66),
    (1950, 0.45),
    (2100, 0.50),
    (2250, 0.52),
    (2500, 0.40),
]


def cloud_spectra(rng: np.random.Generator, n: int = 16) -> np.ndarray:
    """Thick cloud on :data:`GRID_NM`: flat-bright, brightness 0.65-1.0 of the model."""
    base = _anchors(_CLOUD)
    return base[None, :] * rng.uniform(0.65, 1.0, size=(n, 1))


def _vegetation_split(veg: np.ndarray, wl: np.ndarray) -> dict[str, np.ndarray]:
    """Split earthlib's PROSAIL canopies into forest / cropland / grassland subsets.

    Rule (so the classes differ in a physically plausible way): the third with the lowest
    NDVI is grassland (sparser, more soil/litter); of the rest, the darker-NIR half is
    forest (canopy shadowing) and the brighter-NIR half cropland.
    """
    red = veg[:, np.abs(wl - 670).argmin()]
    nir = veg[:, np.abs(wl - 800).argmin()]
    ndvi = (nir - red) / (nir + red)
    order = np.argsort(ndvi, kind="stable")
    third = len(order) // 3
    grass, dense = order[:third], order[third:]
    dense = dense[np.argsort(nir[dense], kind="stable")]
    half = len(dense) // 2
    # canopy shadow darkens forest multiplicatively; keeps the red edge ratio
    return {
        "forest": veg[dense[:half]] * 0.85,
        "cropland": veg[dense[half:]],
        "grassland": veg[grass],
    }


@lru_cache(maxsize=4)
def load_library(seed: int = 0) -> dict[str, np.ndarray]:
    """Reflectance spectra (0..1) per class, resampled to EnMAP's 224 nominal bands.

    Keys are :data:`LANDCOVER_CLASSES` plus ``snow`` and ``cloud``; values are float32
    arrays [n_spectra, 224] in the wavelength-sorted band order of ``enmap_nominal()``.
    earthlib's measured spectra (Ryan et al.; 7,261 spectra) give vegetation (split into
    forest/cropland/grassland), bare soil, built/impervious, non-photosynthetic vegetation
    and burned; ``seed`` only draws the analytic water/snow/cloud variants. Cached; treat
    the arrays as read-only.
    """
    rng = np.random.default_rng(seed)
    spectra, wl, meta = read_earthlib()
    l2 = np.array([m["LEVEL_2"] for m in meta])
    sets: dict[str, np.ndarray] = {}
    sets.update(_vegetation_split(spectra[l2 == "vegetation"], wl))
    sets["bare_soil"] = spectra[l2 == "bare"]
    sets["built_up"] = spectra[l2 == "built"]
    sets["non_photosynthetic_vegetation"] = spectra[l2 == "npv"]
    sets["burned"] = spectra[l2 == "burned"]
    for name, arr in list(sets.items()):
        # drop flat/broken records (all-zero or saturated), they would be outliers
        ok = (arr.max(axis=1) > 0.01) & (arr.max(axis=1) <= 1.0)
        sets[name] = to_grid(arr[ok], wl)
    sets["water"] = water_spectra(rng)
    sets["snow"] = snow_spectra(rng)
    sets["cloud"] = cloud_spectra(rng)

    nominal = enmap_nominal()
    out: dict[str, np.ndarray] = {}
    for name in (*LANDCOVER_CLASSES, *EXTRA_SPECTRA):
        res = resample(sets[name], GRID_NM, nominal.wavelengths, nominal.fwhms)
        out[name] = np.clip(res, 0.0, 1.0).astype(np.float32)
        out[name].setflags(write=False)
    return out
