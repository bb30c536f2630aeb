"""Scene simulator: land-cover fields, per-pixel spectra, atmosphere, clouds and QL masks.

A :class:`Site` is a piece of ground (a canvas a little larger than one scene) with a fixed
land-cover map and fixed per-pixel spectral mixtures, so revisits of the same place on
another date see the same ground. :func:`render_scene` crops a site and adds what changes
between acquisitions: season, illumination, snow, haze, cirrus, clouds and their shadows,
water-vapour absorption, sensor noise, defective pixels and the nodata border of the
rotated swath. Every QL mask is derived from the same fields that changed the pixels, so
masks and pixels agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

import numpy as np
from scipy import ndimage, special

from spectralearth.bands import enmap_nominal
from spectralearth.enmap.scene import NODATA, QL_LAYERS
from spectralearth.synth.spectra import LANDCOVER_CLASSES, load_library

SCALE = 10000  # stored value = reflectance x SCALE (GainOfBand 0.0001)
QL_MASKS = QL_LAYERS  # the six layers the reader knows, in its order

CLASS_ID = {name: i + 1 for i, name in enumerate(LANDCOVER_CLASSES)}
WATER = CLASS_ID["water"]

# Within-class variability: each pixel of class c is a mix of three spectra of c plus a
# fraction (lo..hi) of an "admixture" class (soil between crop rows, trees in built-up
# areas, litter under canopies). In winter, vegetation classes take a further
# ``winter`` share of their admixture (senescence, harvested fields).
#               admixture class,                  lo,   hi,  winter
_ADMIX: dict[str, tuple[str, float, float, float]] = {
    "water": ("water", 0.0, 0.0, 0.0),
    "forest": ("non_photosynthetic_vegetation", 0.0, 0.10, 0.12),
    "cropland": ("bare_soil", 0.0, 0.25, 0.35),
    "grassland": ("non_photosynthetic_vegetation", 0.0, 0.25, 0.25),
    "bare_soil": ("non_photosynthetic_vegetation", 0.0, 0.10, 0.0),
    "built_up": ("grassland", 0.0, 0.30, 0.0),
    "non_photosynthetic_vegetation": ("bare_soil", 0.0, 0.30, 0.0),
    "burned": ("bare_soil", 0.0, 0.30, 0.0),
}
# Share of the land (not water) parcels per class before spatial clustering.
_LAND_PRIOR: dict[str, float] = {
    "forest": 0.26,
    "cropland": 0.32,
    "grassland": 0.15,
    "bare_soil": 0.06,
    "built_up": 0.12,
    "non_photosynthetic_vegetation": 0.06,
    "burned": 0.03,
}
_MEAN_PARCEL_PX = 16.0
CLOUD_MASK_LEVEL = 0.2  # cloud opacity from which a pixel is flagged cloud  # mean field/parcel width (~480 m), typical of European farmland


@dataclass(frozen=True)
class SpectralStack:
    """The library as one table for vectorised per-pixel gathers."""

    rows: np.ndarray  # [N, 224] float32, all land-cover spectra one after the other
    offsets: np.ndarray  # [K + 1] first column of class id k (index 0 unused)
    counts: np.ndarray  # [K + 1] number of spectra of class id k
    admix_id: np.ndarray  # [K + 1] admixture class id of class id k
    admix_lo: np.ndarray
    admix_hi: np.ndarray
    winter: np.ndarray
    snow: np.ndarray  # [n, 224]
    cloud: np.ndarray  # [n, 224]
    wavelengths: np.ndarray
    fwhms: np.ndarray
    detectors: tuple[str, ...]
    t_surface: np.ndarray  # [224] water-vapour transmittance seen from the ground
    t_high: np.ndarray  # [224] the same above cloud / cirrus level
    noise_floor: np.ndarray  # [224] absolute noise (reflectance)
    noise_rel: np.ndarray  # [224] noise per unit reflectance (1 / SNR)


def absorption_depth(w: np.ndarray) -> np.ndarray:
    """Residual water-vapour absorption of L2A reflectance (0 = none, ~1 = opaque).

    Flat-topped (super-Gaussian) bands at 1.38 and 1.88 um where the atmosphere is nearly
    opaque, so L2A reflectance there is close to zero and noisy, plus small residuals at
    940 and 1135 nm that atmospheric correction leaves behind.
    """
    depth = np.zeros_like(w, dtype=float)
    for centre, width, peak, power in (
        (1395, 55, 0.995, 4),
        (1875, 60, 0.99, 4),
        (940, 15, 0.05, 2),
        (1135, 15, 0.06, 2),
    ):
        depth = np.maximum(depth, peak * np.exp(-0.5 * np.abs((w - centre) / width) ** power))
    return depth


@lru_cache(maxsize=4)
def spectral_stack(seed: int = 0) -> SpectralStack:
    """:func:`load_library` arranged for the simulator (cached per seed)."""
    lib = load_library(seed)
    nominal = enmap_nominal()
    k = len(LANDCOVER_CLASSES)
    offsets = np.zeros(k + 1, dtype=np.int64)
    counts = np.ones(k + 1, dtype=np.int64)
    admix_id = np.zeros(k + 1, dtype=np.int64)
    lo, hi, winter = (np.zeros(k + 1, dtype=np.float32) for _ in range(3))
    start = 0
    for name in LANDCOVER_CLASSES:
        cid = CLASS_ID[name]
        offsets[cid], counts[cid] = start, len(lib[name])
        start += len(lib[name])
        adm, lo[cid], hi[cid], winter[cid] = _ADMIX[name]
        admix_id[cid] = CLASS_ID[adm]
    rows = np.ascontiguousarray(
        np.concatenate([lib[n] for n in LANDCOVER_CLASSES], axis=0), dtype=np.float32
    )
    w = nominal.wavelengths
    depth = absorption_depth(w)
    swir = np.array([d == "SWIR" for d in nominal.detectors])
    # EnMAP SNR: ~400-500 in the VNIR, ~150-180 in the SWIR, falling towards 2.45 um
    snr = np.where(swir, 180.0 - 80.0 * np.clip((w - 2000.0) / 450.0, 0.0, 1.0), 450.0)
    floor = np.where(swir, 0.0015, 0.0008) + 0.02 * depth  # retrieval noise where opaque
    return SpectralStack(
        rows=rows,
        offsets=offsets,
        counts=counts,
        admix_id=admix_id,
        admix_lo=lo,
        admix_hi=hi,
        winter=winter,
        snow=np.asarray(lib["snow"]),
        cloud=np.asarray(lib["cloud"]),
        wavelengths=w,
        fwhms=nominal.fwhms,
        detectors=nominal.detectors,
        t_surface=(1.0 - depth).astype(np.float32),
        t_high=(1.0 - 0.5 * depth).astype(np.float32),
        noise_floor=floor.astype(np.float32),
        noise_rel=(1.0 / snr).astype(np.float32),
    )


# --------------------------------------------------------------------------- fields


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]
) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean and unit std (float32).

    Filtered in the Fourier domain (fast for any sigma) on a padded grid, so the field does
    not wrap around the edges.
    """
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    pad_y, pad_x = int(math.ceil(2 * sy)), int(math.ceil(2 * sx))
    full = (shape[0] + 2 * pad_y, shape[1] + 2 * pad_x)
    noise = rng.standard_normal(full)
    fy = np.fft.fftfreq(full[0])[:, None]
    fx = np.fft.rfftfreq(full[1])[None, :]
    transfer = np.exp(-2.0 * np.pi**2 * ((fy * sy) ** 2 + (fx * sx) ** 2))
    f = np.fft.irfft2(np.fft.rfft2(noise) * transfer, s=full)
    f = f[pad_y : pad_y + shape[0], pad_x : pad_x + shape[1]]
    f = f - f.mean()
    sd = f.std()
    return (f / sd if sd > 0 else f).astype(np.float32)


def ramp(field_: np.ndarray, cover: float, softness: float) -> np.ndarray:
    """Map a unit field to an opacity 0..1 whose >= 0.5 area is ``cover`` of the field.

    The 0.5 level sits on the (1 - cover) quantile, so the masks (opacity >= 0.5) have
    exactly the requested cover; ``softness`` (in field std) sets the width of the edge.
    """
    if cover <= 0:
        return np.zeros_like(field_)
    q = np.quantile(field_, 1.0 - cover)
    return np.clip((field_ - q) / softness + 0.5, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Swath:
    """The valid-data strip of a scene and its outline."""

    valid: np.ndarray  # bool [size, size]
    corners: dict[str, tuple[float, float]]  # frame -> (col, row) in pixel units
    width_px: int  # across-track width of the strip
    length_px: int  # along-track length inside the image


def swath_geometry(size: int, theta_deg: float) -> Swath:
    """Valid-data mask of a swath strip rotated by ``theta_deg`` across a north-up image.

    An orthorectified L2A scene is the sensor's strip rotated by the ground-track heading;
    the image corners outside it are nodata. The strip runs through the whole image height
    (south-south-west, descending orbit); its width is chosen so that all four image corners
    fall outside it. Corners: upper_left, lower_left, lower_right, upper_right (where the
    strip edges meet the top and bottom image edges) and center, as (col, row) pixels.
    """
    th = math.radians(theta_deg)
    cos, sin = math.cos(th), math.sin(th)
    half = 0.97 * (size / 2.0) * (cos - sin)  # < distance from the centre line to a corner
    across = np.array([cos, sin])  # (col, row) unit vector towards the right edge
    mid = size / 2.0
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    valid = np.abs((cols - mid) * across[0] + (rows - mid) * across[1]) <= half

    def corner(u: float, row: float) -> tuple[float, float]:
        # point at across-track offset u on the image edge ``row``
        t = (row - mid - u * sin) / cos  # along-track parameter
        return (float(mid + u * cos - t * sin), float(row))

    corners = {
        "upper_left": corner(-half, 0.0),
        "lower_left": corner(-half, float(size)),
        "lower_right": corner(half, float(size)),
        "upper_right": corner(half, 0.0),
        "center": (mid, mid),
    }
    return Swath(valid, corners, int(round(2 * half)), int(round(size / cos)))


# --------------------------------------------------------------------------- ground


@dataclass
class Site:
    """Ground of one place: land cover and per-pixel spectral mixtures on a canvas."""

    classmap: np.ndarray  # uint8 [H, W], class ids 1..K
    index: np.ndarray  # int32 [4, H, W]: three spectra of the class + one admixture spectrum
    weight: np.ndarray  # float32 [3, H, W]: abundances of the three (sum 1)
    admix: np.ndarray  # float32 [H, W]: admixture fraction
    brightness: np.ndarray  # float32 [H, W]: multiplicative brightness (slope, density)
    land_prior: dict[str, float] = field(default_factory=dict)


def make_site(rng: np.random.Generator, canvas: int, stack: SpectralStack) -> Site:
    """Spatially coherent land cover on a ``canvas`` x ``canvas`` grid.

    Voronoi parcels (fields, stands, blocks) with slightly wobbly edges; each parcel's class
    is drawn from per-class smooth "landscape" fields, so forests, towns and farmland form
    clusters. Lakes are smooth blobs cut across parcels.
    """
    h = w = canvas
    land = [c for c in LANDCOVER_CLASSES if c != "water"]
    prior = np.array([_LAND_PRIOR[c] for c in land]) * rng.gamma(4.0, 0.25, size=len(land))
    if rng.random() < 0.6:  # most places have no burned area
        prior[land.index("burned")] = 0.0
    prior = prior / prior.sum()

    # parcels: nearest of n random seeds, looked up through a smooth displacement field
    n = max(6, int(h * w / _MEAN_PARCEL_PX**2))
    sr, sc = rng.integers(0, h, n), rng.integers(0, w, n)
    seeds = np.zeros((h, w), dtype=np.int32)
    seeds[sr, sc] = np.arange(1, n + 1, dtype=np.int32)
    _, (ir, ic) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    nearest = seeds[ir, ic]
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float32)
    rr += 1.5 * smooth_field(rng, (h, w), 4.0)
    cc += 1.5 * smooth_field(rng, (h, w), 4.0)
    parcel = ndimage.map_coordinates(nearest, [rr, cc], order=0, mode="nearest")

    # class per parcel: Gumbel-max over prior + landscape fields sampled at the parcel seed
    macro_sigma = max(4.0, h / 6.0)
    logits = np.log(np.maximum(prior, 1e-12))[:, None] + np.stack(
        [1.8 * smooth_field(rng, (h, w), macro_sigma)[sr, sc] for _ in land]
    )
    logits += rng.gumbel(size=logits.shape)
    parcel_class = np.zeros(n + 1, dtype=np.uint8)
    parcel_class[1:] = np.array([CLASS_ID[c] for c in land], dtype=np.uint8)[logits.argmax(0)]
    # seeds that landed on the same pixel vanish; their ids never occur in `parcel`
    classmap = parcel_class[parcel]

    # lakes: a smooth field above its quantile; each lake is its own "parcel"
    water = smooth_field(rng, (h, w), float(np.clip(h / 10.0, 3.0, 20.0)))
    water = water >= np.quantile(water, 1.0 - rng.uniform(0.04, 0.12))
    lakes, n_lakes = ndimage.label(water)
    parcel = np.where(water, n + lakes, parcel)
    classmap[water] = WATER
    total = n + n_lakes + 1

    cls = classmap.astype(np.int64)
    u = rng.random((4, total))
    index = np.empty((4, h, w), dtype=np.int32)
    for j in range(3):
        index[j] = stack.offsets[cls] + (u[j][parcel] * stack.counts[cls]).astype(np.int64)
    adm = stack.admix_id[cls]
    index[3] = stack.offsets[adm] + (u[3][parcel] * stack.counts[adm]).astype(np.int64)

    # abundances vary smoothly inside a parcel; slot 0 dominates
    g = np.stack([smooth_field(rng, (h, w), 1.5) for _ in range(3)])
    g = 2.0 * g + np.array([1.0, 0.0, 0.0], dtype=np.float32)[:, None, None]
    weight = special.softmax(g, axis=0).astype(np.float32)
    fa = special.ndtr(smooth_field(rng, (h, w), 3.0))
    admix = (stack.admix_lo[cls] + (stack.admix_hi[cls] - stack.admix_lo[cls]) * fa).astype(
        np.float32
    )
    brightness = 1.0 + 0.05 * smooth_field(rng, (h, w), 2.0)
    brightness *= (1.0 + 0.04 * rng.standard_normal(total))[parcel]
    return Site(
        classmap=classmap.astype(np.uint8),
        index=index,
        weight=weight,
        admix=admix,
        brightness=brightness.astype(np.float32),
        land_prior={c: float(p) for c, p in zip(land, prior, strict=True)},
    )


# --------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class Conditions:
    """What differs between two acquisitions of one place."""

    when: datetime
    theta_deg: float  # swath rotation
    sun_azimuth: float  # degrees from north, clockwise
    sun_elevation: float
    cloud_cover: float  # fractions 0..1 of the (padded) scene
    haze_cover: float
    cirrus_cover: float
    snow_cover: float


@dataclass
class RenderedScene:
    data: np.ndarray  # int16 [224, S, S], reflectance x 10000, NODATA outside the swath
    masks: dict[str, np.ndarray]  # QL layer -> uint8 [S, S] (1 = flagged, 0 outside swath)
    classmap: np.ndarray  # uint8 [S, S], 0 outside the swath
    valid: np.ndarray  # bool [S, S]
    swath: Swath


def _winter_weight(month: int) -> float:
    """0 in the growing season, 1 in mid-winter (how senescent the vegetation is)."""
    return {12: 1.0, 1: 1.0, 2: 1.0, 3: 0.6, 11: 0.6, 4: 0.25, 10: 0.3}.get(month, 0.0)


def _ground(
    site: Site,
    r0: int,
    c0: int,
    size: int,
    cond: Conditions,
    stack: SpectralStack,
    illumination: float,
) -> np.ndarray:
    """Surface reflectance [S, S, 224] (pixel-interleaved) of the site crop, no atmosphere."""
    win = (slice(r0, r0 + size), slice(c0, c0 + size))
    cls = site.classmap[win].astype(np.int64)
    f = site.admix[win]
    f = f + _winter_weight(cond.when.month) * stack.winter[cls] * (1.0 - f)
    scale = site.brightness[win] * np.float32(illumination)
    weights = np.concatenate([site.weight[(slice(None), *win)] * (1.0 - f), f[None]]) * scale
    index = site.index[(slice(None), *win)].reshape(4, -1)
    weights = weights.reshape(4, -1)
    # gather whole spectra (contiguous rows of the [N, 224] table) per pixel, in chunks
    out = np.empty((size * size, stack.rows.shape[1]), dtype=np.float32)
    step = 8192
    for a in range(0, size * size, step):
        px = slice(a, a + step)
        acc = stack.rows[index[0, px]] * weights[0, px, None]
        for j in range(1, 4):
            acc += stack.rows[index[j, px]] * weights[j, px, None]
        out[px] = acc
    # 30 m pixels integrate a little of their neighbours (sensor PSF): mixes class edges
    return _psf(out.reshape(size, size, -1))


def _psf(cube: np.ndarray, sigma: float = 0.45) -> np.ndarray:
    """Separable 3-tap Gaussian blur over rows and columns of a [rows, cols, bands] cube.

    Explicit slicing keeps each band vector contiguous (scipy's filters are slow along
    strided axes); taps beyond +-1 px weigh < 1e-4 at this sigma. Edges are replicated.
    """
    side = math.exp(-0.5 / sigma**2)
    w_side, w_mid = side / (1 + 2 * side), 1 / (1 + 2 * side)
    for axis in (0, 1):
        x = np.moveaxis(cube, axis, 0)
        y = x * np.float32(w_mid)
        y[1:] += np.float32(w_side) * x[:-1]
        y[0] += np.float32(w_side) * x[0]
        y[:-1] += np.float32(w_side) * x[1:]
        y[-1] += np.float32(w_side) * x[-1]
        cube = np.moveaxis(y, 0, axis)
    return cube


def _shadow_offset(cond: Conditions, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """(row, col) shift from a cloud to its shadow: away from the sun, cloud height / tan(elev)."""
    height_m = rng.uniform(800.0, 2500.0)
    length_px = height_m / math.tan(math.radians(max(cond.sun_elevation, 10.0))) / 30.0
    length_px = min(length_px, size / 4.0)
    az = math.radians(cond.sun_azimuth)
    # shadow lies opposite the sun: north is -row, east is +col
    return int(round(length_px * math.cos(az))), int(round(-length_px * math.sin(az)))


def render_scene(
    site: Site,
    r0: int,
    c0: int,
    size: int,
    cond: Conditions,
    rng: np.random.Generator,
    stack: SpectralStack,
) -> RenderedScene:
    """One acquisition of ``site`` (crop at row ``r0``, col ``c0``) with its QL masks."""
    s = size
    swath = swath_geometry(s, cond.theta_deg)
    valid = swath.valid
    refl = _ground(site, r0, c0, s, cond, stack, illumination=rng.uniform(0.95, 1.05))
    # pixel-interleaved [S, S, 224]: band vectors broadcast, per-pixel fields as [S, S, 1]

    # snow (on the ground, so it is shadowed and absorbed like the surface)
    snow_sigma = float(np.clip(s / 8.0, 3.0, 25.0))
    snow = ramp(smooth_field(rng, (s, s), snow_sigma), cond.snow_cover, 0.25)
    if cond.snow_cover > 0:
        tex = 0.92 + 0.08 * np.clip(smooth_field(rng, (s, s), 2.0), -2, 2) / 2
        spec = stack.snow[rng.integers(len(stack.snow))]
        refl *= (1.0 - snow)[..., None]
        refl += spec.astype(np.float32) * (snow * tex)[..., None]

    # clouds on a padded grid so that clouds just outside the image cast shadows into it
    dr, dc = _shadow_offset(cond, s, rng)
    pad = max(abs(dr), abs(dc)) + 1
    # multi-scale: a broad envelope makes cloud fields cluster, leaving other parts clear
    grid = (s + 2 * pad,) * 2
    envelope = smooth_field(rng, grid, float(np.clip(s / 4.0, 6.0, 60.0)))
    detail = smooth_field(rng, grid, float(np.clip(s / 12.0, 2.0, 12.0)))
    cloud_pad = ramp((0.75 * envelope + 0.5 * detail) / 0.9, cond.cloud_cover, 0.4)
    cloud = cloud_pad[pad : pad + s, pad : pad + s]
    shadow = cloud_pad[pad - dr : pad - dr + s, pad - dc : pad - dc + s]
    if cond.cloud_cover > 0:
        refl *= (1.0 - rng.uniform(0.55, 0.75) * shadow)[..., None]

    # haze: additive, strongest in the blue (residual aerosol after correction)
    haze = ramp(smooth_field(rng, (s, s), float(np.clip(s / 5.0, 4.0, 40.0))), cond.haze_cover, 1.0)
    if cond.haze_cover > 0:
        shape = rng.uniform(0.03, 0.07) * (stack.wavelengths / 550.0) ** -1.5
        refl += shape.astype(np.float32) * haze[..., None]

    refl *= stack.t_surface

    # cirrus: thin, spectrally flat, above the water vapour (shows in the 1.38 um band)
    cs = float(np.clip(s / 8.0, 3.0, 30.0))
    cirrus = ramp(smooth_field(rng, (s, s), (cs, 3 * cs)), cond.cirrus_cover, 0.8)
    if cond.cirrus_cover > 0:
        refl += (rng.uniform(0.015, 0.04) * stack.t_high).astype(np.float32) * cirrus[..., None]

    if cond.cloud_cover > 0:
        tex = 0.85 + 0.15 * np.clip(smooth_field(rng, (s, s), 1.5), -2, 2) / 2
        spec = stack.cloud[rng.integers(len(stack.cloud))] * stack.t_high
        refl *= (1.0 - cloud)[..., None]
        refl += spec.astype(np.float32) * (cloud * tex)[..., None]

    # sensor + retrieval noise: floor (large in the opaque water-vapour bands) + shot-like part
    sigma = np.abs(refl)
    sigma *= stack.noise_rel
    sigma += stack.noise_floor
    sigma *= rng.standard_normal(refl.shape, dtype=np.float32)
    refl += sigma
    del sigma

    # a few defective detector pixels: dead (0) over a run of bands
    n_bad = max(2, int(round(valid.sum() * 3e-4)))
    vr, vc = np.nonzero(valid)
    pick = rng.choice(len(vr), size=min(n_bad, len(vr)), replace=False)
    pixelmask = np.zeros((s, s), dtype=bool)
    nb = refl.shape[2]
    for p in pick:
        b0 = int(rng.integers(0, nb - 10))
        refl[vr[p], vc[p], b0 : b0 + int(rng.integers(5, 40))] = 0.0
        pixelmask[vr[p], vc[p]] = True

    refl *= SCALE
    np.rint(refl, out=refl)
    np.clip(refl, NODATA + 1, 32767, out=refl)
    refl[~valid] = NODATA
    data = np.ascontiguousarray(refl.astype(np.int16).transpose(2, 0, 1))  # band-sequential
    del refl

    # Cloud and shadow masks include the semi-transparent edge (opacity >= 0.2) and the thin
    # fringe below that counts as haze, so "clear" pixels carry at most ~2 % cloud.
    cloud_m = cloud >= CLOUD_MASK_LEVEL
    fringe = (cloud >= 0.02) & ~cloud_m
    masks = {
        "QL_QUALITY_CLOUD": cloud_m,
        "QL_QUALITY_SNOW": (snow >= 0.5) & ~cloud_m,
        "QL_QUALITY_HAZE": ((haze >= 0.5) | fringe) & ~cloud_m,
        "QL_QUALITY_CLOUDSHADOW": (shadow >= CLOUD_MASK_LEVEL) & ~cloud_m,
        "QL_QUALITY_CIRRUS": (cirrus >= 0.5) & ~cloud_m,
        "QL_PIXELMASK": pixelmask,
    }
    masks = {k: (m & valid).astype(np.uint8) for k, m in masks.items()}
    classmap = np.where(valid, site.classmap[r0 : r0 + s, c0 : c0 + s], 0).astype(np.uint8)
    return RenderedScene(data=data, masks=masks, classmap=classmap, valid=valid, swath=swath)


def solar_position(lat: float, lon: float, when: datetime) -> tuple[float, float]:
    """Sun azimuth (deg from north, clockwise) and elevation (deg) at a UTC time.

    NOAA's low-precision formulas (fractional-year series), good to ~0.5 deg: enough for
    metadata and shadow direction.
    """
    doy = when.timetuple().tm_yday
    hour = when.hour + when.minute / 60 + when.second / 3600
    g = 2 * math.pi / 365 * (doy - 1 + (hour - 12) / 24)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    tst = hour * 60 + eqtime + 4 * lon
    ha = math.radians(tst / 4 - 180)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.acos(max(-1.0, min(1.0, cos_zen)))
    az = math.degrees(
        math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return (az + 180.0) % 360.0, 90.0 - math.degrees(zen)
