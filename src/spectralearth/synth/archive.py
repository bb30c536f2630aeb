"""Write a synthetic EnMAP L2A archive: one DLR-style product folder per scene, plus labels.

Layout written by :func:`write_archive` (only under the two folders it is given)::

    <out_dir>/<name>/<name>-SPECTRAL_IMAGE.TIF       int16, 224 bands (wavelength order),
                                                      reflectance x 10000, nodata -32768
    <out_dir>/<name>/<name>-METADATA.XML             official tag structure
    <out_dir>/<name>/<name>-QL_QUALITY_{CLOUD,SNOW,HAZE,CLOUDSHADOW,CIRRUS}.TIF, -QL_PIXELMASK.TIF
    <labels_dir>/<name>-CLASSMAP.TIF                 uint8 land-cover ids, 0 = no label
    <labels_dir>/classes.json                        {"1": "water", ...}

:func:`plan_acquisitions` (places, dates, sky of every scene), :func:`site_of` (the ground
of a place) and :attr:`Acquisition.origin` (where a scene lies on its place's canvas) are
public, so that label sources built from the same ground (``downstream.synth_labels``) make
the very calls the writer makes.

Scenes lie in several UTM zones at European latitudes; some revisit an earlier scene's
place on a later date (same zone and ground, origin shifted by a few hundred metres, new
clouds). Everything is drawn from ``seed``: the same call writes byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.transform import from_origin

from spectralearth.enmap.l2a import PRODUCT_NAME_RE
from spectralearth.enmap.scene import NODATA
from spectralearth.io import atomic_path, atomic_write_text
from spectralearth.synth.metadata import ProductInfo, metadata_with_sizes
from spectralearth.synth.scene import (
    QL_MASKS,
    WATER,
    Conditions,
    RenderedScene,
    Site,
    SpectralStack,
    make_site,
    render_scene,
    solar_position,
    spectral_stack,
)
from spectralearth.synth.spectra import class_ids

PIXEL_M = 30.0
VERSION = "01.04.00"  # processor version: V010400 in the product name
ZONES = (32, 33, 31, 34)  # UTM zones covering western and central Europe (north)
GROUND_SPEED_M_S = 6900.0  # EnMAP ground-track speed: sets start -> stop time of a tile
ENMAP_INCLINATION_DEG = 97.96
EPOCH = datetime(2022, 4, 1)  # EnMAP launch: datatake numbers count from here
CLASSMAP_SUFFIX = "-CLASSMAP.TIF"
COVER_LAYERS = {
    "cloudCover": "QL_QUALITY_CLOUD",
    "hazeCover": "QL_QUALITY_HAZE",
    "cirrusCover": "QL_QUALITY_CIRRUS",
    "snowCover": "QL_QUALITY_SNOW",
    "cloudShadow": "QL_QUALITY_CLOUDSHADOW",
}
# Fast lossless compression: int16 reflectance with horizontal differencing.
_IMAGE_OPTS = {"compress": "deflate", "zlevel": 1, "predictor": 2, "interleave": "band"}
_MASK_OPTS = {"compress": "deflate", "zlevel": 6}


@dataclass
class Place:
    """One place of the archive: a UTM zone, a centre and a canvas the scenes are cut from."""

    index: int
    zone: int
    lat: float
    lon: float
    theta_deg: float  # swath rotation (ground-track heading off north)
    margin: int  # px of canvas beyond the first scene on each side (room for revisits)
    canvas: int
    x0: float  # canvas upper-left corner, map metres (multiples of 30)
    y0: float


@dataclass
class Acquisition:
    """One scene: its place, date, offset on the place's canvas and sky conditions."""

    place: Place
    start: datetime
    shift: tuple[int, int]  # (rows, cols) of the scene origin relative to the place centre
    snowy: bool
    cloud: float
    haze: float
    cirrus: float
    snow: float
    tile: int = 1
    datatake: int = 0
    processed: datetime | None = None
    name: str = ""

    @property
    def origin(self) -> tuple[int, int]:
        """(row, col) of the scene's upper-left pixel on its place's canvas."""
        return self.place.margin + self.shift[0], self.place.margin + self.shift[1]


def _epsg(zone: int) -> int:
    return 32600 + zone


def _track_heading(lat: float) -> float:
    """Angle of a descending sun-synchronous ground track off north (deg, ~11-14 in Europe).

    ``asin(cos i / cos lat)``: 11.9 deg at 47.6 N, where the corners of a real L2A tile
    give an along-track edge 12.1 deg off north.
    """
    c = abs(math.cos(math.radians(ENMAP_INCLINATION_DEG))) / math.cos(math.radians(lat))
    return math.degrees(math.asin(min(c, 1.0)))


def plan_acquisitions(
    scenes: int, size: int, seed: int, revisit_fraction: float
) -> list[Acquisition]:
    """Places, dates, revisits and sky conditions of every scene (no pixels yet), in
    acquisition order: what :func:`write_archive` writes for these arguments."""
    rng = np.random.default_rng([seed, 0])
    n_rev = int(round(scenes * revisit_fraction))
    n_places = scenes - n_rev
    if scenes >= 2:
        n_places = max(2, n_places)  # two places at least, in two UTM zones
    n_places = max(1, min(scenes, n_places))
    n_rev = scenes - n_places

    margin = int(np.clip(size // 8, 3, 20))
    canvas = size + 2 * margin
    z0 = int(rng.integers(len(ZONES)))
    places = []
    for p in range(n_places):
        zone = ZONES[(z0 + p) % len(ZONES)]
        lat = float(rng.uniform(45.5, 54.5))
        lon = float(6 * zone - 183 + rng.uniform(-2.0, 2.0))
        x, y = Transformer.from_crs(4326, _epsg(zone), always_xy=True).transform(lon, lat)
        half = canvas * PIXEL_M / 2
        places.append(
            Place(
                index=p,
                zone=zone,
                lat=lat,
                lon=lon,
                theta_deg=_track_heading(lat),
                margin=margin,
                canvas=canvas,
                x0=round((x - half) / PIXEL_M) * PIXEL_M,
                y0=round((y + half) / PIXEL_M) * PIXEL_M,
            )
        )

    def overpass(day: datetime, place: Place) -> datetime:
        # EnMAP crosses Europe around 11:00 local solar time
        minutes = 11 * 60 - place.lon * 4 + rng.uniform(-10, 10)
        return day + timedelta(minutes=float(minutes), microseconds=int(rng.integers(0, 10**6)))

    def sky(snowy: bool) -> dict[str, float]:
        return {
            # the cloud mask takes in the cloud edges and ends up ~1.5x this share
            # most archive scenes are clear or nearly so (the curated release keeps <= 1 %
            # cloud per patch); a few carry broken cloud fields
            "cloud": 0.0 if rng.random() < 0.65 else float(rng.uniform(0.01, 0.06)),
            "haze": 0.0 if rng.random() < 0.4 else float(rng.uniform(0.03, 0.25)),
            "cirrus": 0.0 if rng.random() < 0.5 else float(rng.uniform(0.02, 0.15)),
            "snow": float(rng.uniform(0.25, 0.7)) if snowy else 0.0,
        }

    acqs: list[Acquisition] = []
    last: dict[int, datetime] = {}
    for place in places:
        year = int(rng.integers(2023, 2025))
        if place.index == 0:  # every archive holds a snow scene, so the snow path is exercised
            day = datetime(year, 1, 15) + timedelta(days=int(rng.integers(0, 45)))
        else:
            day = datetime(year, 4, 1) + timedelta(days=int(rng.integers(0, 183)))
        snowy = place.index == 0
        acq = Acquisition(place, overpass(day, place), (0, 0), snowy, **sky(snowy))
        acqs.append(acq)
        last[place.index] = acq.start
    for j in range(n_rev):
        place = places[j % n_places]
        day = datetime(*last[place.index].timetuple()[:3]) + timedelta(
            days=int(rng.integers(4, 121))
        )
        snowy = day.month in (12, 1, 2, 3) and rng.random() < 0.6
        m = place.margin
        while True:  # shift by a few hundred metres, never zero
            shift = (int(rng.integers(-m, m + 1)), int(rng.integers(-m, m + 1)))
            if abs(shift[0]) + abs(shift[1]) >= 2:
                break
        acq = Acquisition(place, overpass(day, place), shift, snowy, **sky(snowy))
        acqs.append(acq)
        last[place.index] = acq.start
    if not any(a.cloud > 0 for a in acqs):
        acqs[0].cloud = 0.06  # every archive has clouds to mask

    acqs.sort(key=lambda a: a.start)
    used: set[int] = set()
    for a in acqs:
        dt = 1000 + (a.start - EPOCH).days * 12 + int(rng.integers(0, 12))
        while dt in used:
            dt += 1
        used.add(dt)
        a.datatake = dt
        a.tile = int(rng.integers(1, 6))
        a.processed = a.start + timedelta(
            days=int(rng.integers(1, 400)), seconds=int(rng.integers(0, 86400))
        )
        a.name = (
            f"ENMAP01-____L2A-DT{dt:010d}_{a.start:%Y%m%dT%H%M%S}Z_{a.tile:03d}"
            f"_V{VERSION.replace('.', '')}_{a.processed:%Y%m%dT%H%M%S}Z"
        )
        assert PRODUCT_NAME_RE.match(a.name), a.name
    return acqs


def _block(size: int) -> int:
    """GeoTIFF tile edge (a multiple of 16): 128 px, smaller for tiny test images."""
    return 128 if size > 128 else 32 if size > 32 else 16


def _write_tif(
    path: Path,
    data: np.ndarray,
    profile: dict,
    band_tags: list[dict] | None = None,
    descriptions: list[str] | None = None,
    tags: dict | None = None,
) -> None:
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", **profile) as dst:
            dst.write(data)
            if tags:
                dst.update_tags(**tags)
            for i, t in enumerate(band_tags or [], start=1):
                dst.update_tags(i, **t)
            for i, d in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, d)


def _cover(mask: np.ndarray, n_valid: int) -> int:
    """Integer percent of the valid (non-nodata) pixels, rounded half up."""
    return int(math.floor(100.0 * int(mask.sum()) / max(n_valid, 1) + 0.5))


def _band_stats(data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of the valid pixels, in reflectance."""
    flat = data.reshape(data.shape[0], -1)
    sel = np.flatnonzero(valid.ravel())
    mean = np.empty(data.shape[0])
    std = np.empty(data.shape[0])
    for b in range(data.shape[0]):
        v = flat[b, sel].astype(np.float64) * 1e-4
        mean[b], std[b] = (v.mean(), v.std()) if v.size else (0.0, 0.0)
    return mean, std


def _write_product(
    out_dir: Path,
    labels_dir: Path,
    acq: Acquisition,
    scene: RenderedScene,
    size: int,
    stack: SpectralStack,
) -> Path:
    place = acq.place
    r0, c0 = acq.origin
    x_ul, y_ul = place.x0 + c0 * PIXEL_M, place.y0 - r0 * PIXEL_M
    transform = from_origin(x_ul, y_ul, PIXEL_M, PIXEL_M)
    crs = CRS.from_epsg(_epsg(place.zone))
    folder = out_dir / acq.name
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, int] = {}
    block = _block(size)
    base = {
        "width": size,
        "height": size,
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
    }

    image = folder / f"{acq.name}-SPECTRAL_IMAGE.TIF"
    wl, fw = stack.wavelengths, stack.fwhms
    _write_tif(
        image,
        scene.data,
        {**base, **_IMAGE_OPTS, "count": scene.data.shape[0], "dtype": "int16", "nodata": NODATA},
        band_tags=[
            {
                "wavelength": f"{w:.3f}",
                "fwhm": f"{f:.5f}",
                "wavelength_units": "Nanometers",
                "detector": d,
            }
            for w, f, d in zip(wl, fw, stack.detectors, strict=True)
        ],
        descriptions=[f"band {i} ({w:.3f} Nanometers)" for i, w in enumerate(wl, start=1)],
        tags={
            "start_time": acq.start.strftime("%Y-%m-%dT%H:%M:%S"),
            "product": acq.name,
            "scale_factor": "0.0001",
            "synthetic": "spectralearth.synth (earthlib spectra)",
        },
    )
    files[image.name] = image.stat().st_size
    for layer in QL_MASKS:
        p = folder / f"{acq.name}-{layer}.TIF"
        _write_tif(
            p, scene.masks[layer][None], {**base, **_MASK_OPTS, "count": 1, "dtype": "uint8"}
        )
        files[p.name] = p.stat().st_size
    _write_tif(
        classmap_path(labels_dir, acq.name),
        scene.classmap[None],
        {**base, **_MASK_OPTS, "count": 1, "dtype": "uint8", "nodata": 0},
        tags={"classes": json.dumps({str(k): v for k, v in class_ids().items()}), "no_label": "0"},
    )

    # footprint: swath corners (pixel units) -> map -> lon/lat
    to_ll = Transformer.from_crs(_epsg(place.zone), 4326, always_xy=True)
    corners = {
        k: to_ll.transform(x_ul + c * PIXEL_M, y_ul - r * PIXEL_M)
        for k, (c, r) in scene.swath.corners.items()
    }
    n_valid = int(scene.valid.sum())
    cover = {k: _cover(scene.masks[layer] > 0, n_valid) for k, layer in COVER_LAYERS.items()}
    cover["waterCover"] = _cover(scene.classmap == WATER, n_valid)
    mean, std = _band_stats(scene.data, scene.valid)
    stop = acq.start + timedelta(seconds=scene.swath.length_px * PIXEL_M / GROUND_SPEED_M_S)
    mid = acq.start + (stop - acq.start) / 2
    sun = {k: solar_position(lat, lon, mid) for k, (lon, lat) in corners.items()}
    info = ProductInfo(
        name=acq.name,
        datatake=acq.datatake,
        tile=acq.tile,
        version=VERSION,
        start=acq.start,
        stop=stop,
        processed=acq.processed,
        utm_zone=place.zone,
        columns=size,
        rows=size,
        swath_width=scene.swath.width_px,
        swath_length=scene.swath.length_px,
        corners_lonlat=corners,
        scene_azimuth=place.theta_deg,
        sun=sun,
        cover=cover,
        wavelengths=wl,
        fwhms=fw,
        detectors=stack.detectors,
        band_mean=mean,
        band_std=std,
        files=files,
        season="winter" if acq.start.month in (12, 1, 2) else "summer",
    )
    xml_name = f"{acq.name}-METADATA.XML"
    doc = metadata_with_sizes(info, xml_name)
    with atomic_path(folder / xml_name) as tmp:
        tmp.write_bytes(doc)
    return folder


def site_of(place: Place, seed: int, stack: SpectralStack) -> Site:
    """The ground (land cover, spectral mixtures) of ``place`` on its canvas, for ``seed``."""
    return make_site(np.random.default_rng([seed, 1, place.index]), place.canvas, stack)


def write_archive(
    out_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    scenes: int,
    size: int,
    seed: int,
    revisit_fraction: float = 0.5,
    progress: bool = False,
) -> list[Path]:
    """Write ``scenes`` synthetic EnMAP L2A products of ``size`` x ``size`` px under ``out_dir``
    and their class maps (downstream labels) and ``classes.json`` under ``labels_dir``;
    nothing anywhere else. ``revisit_fraction`` of the scenes revisit an earlier scene's place on a later date
    (at least two distinct places whenever ``scenes >= 2``, in different UTM zones).
    Returns the product folders in acquisition order. Deterministic for a given seed.
    """
    if scenes < 1:
        raise ValueError(f"scenes must be >= 1, got {scenes}")
    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    if not 0.0 <= revisit_fraction <= 1.0:
        raise ValueError(f"revisit_fraction must lie in [0, 1], got {revisit_fraction}")
    out_dir, labels_dir = Path(out_dir), Path(labels_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        labels_dir / "classes.json",
        json.dumps({str(k): v for k, v in class_ids().items()}, indent=2) + "\n",
    )

    stack = spectral_stack(seed)
    acqs = plan_acquisitions(scenes, size, seed, revisit_fraction)
    sites: dict[int, Site] = {}
    paths: list[Path] = []
    iterator = acqs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(acqs, desc="synthetic EnMAP L2A", unit="scene")
    for acq in iterator:
        place = acq.place
        if place.index not in sites:
            sites[place.index] = site_of(place, seed, stack)
        rng = np.random.default_rng([seed, 2, acq.datatake])
        az, elev = solar_position(place.lat, place.lon, acq.start)
        cond = Conditions(
            when=acq.start,
            theta_deg=place.theta_deg,
            sun_azimuth=az,
            sun_elevation=elev,
            cloud_cover=acq.cloud,
            haze_cover=acq.haze,
            cirrus_cover=acq.cirrus,
            snow_cover=acq.snow,
        )
        scene = render_scene(sites[place.index], *acq.origin, size, cond, rng, stack)
        paths.append(_write_product(out_dir, labels_dir, acq, scene, size, stack))
    return paths


def classmap_path(labels_dir: str | os.PathLike, product: str | os.PathLike) -> Path:
    """Where :func:`write_archive` puts the class map of ``product`` (a name, or its folder)
    in ``labels_dir``."""
    return Path(labels_dir) / f"{Path(product).name}{CLASSMAP_SUFFIX}"
