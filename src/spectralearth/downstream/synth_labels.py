"""Synthetic label sources for the nine downstream schemas (the embedded default).

The synthetic archive's class maps say which land-cover class (water, forest, cropland,
grassland, bare soil, built-up, non-photosynthetic vegetation, burned) each pixel belongs
to. Crop types and tree species need more: here they are **spectral families**. Every
class's pool of library spectra (earthlib, see :mod:`spectralearth.synth.spectra`) is cut
into ``k`` families by k-means (``random_state=0``) on the spectra's 12 leading principal
components, and a pixel
takes the family of its *dominant endmember* (of the three class spectra the generator
mixes into it, the one with the largest abundance). The generator's ground is rebuilt for
this from the archive's settings (``synth.scenes/size/seed/revisit_fraction``: the same
calls ``write_archive`` makes, so the same sites), and every rebuilt class map is checked
against the one on disk; an archive made with other settings is refused.

:data:`SCHEMAS` maps, per label source, each generator class to the source codes its
families become (one code: no split). Classes a schema has no code for get 0 (no label).
Codes the downstream datasets do not keep are deliberate, as in the real products (the
CDL has non-crop classes, CORINE classes BigEarthNet drops):

=========== ======================================================================
source      generator class -> codes (families in order)
=========== ======================================================================
CDL         cropland -> the 20 crop codes of EnMAP-, DESIS- and EO1-CDL (each dataset
            keeps its 14); water 111, forest 141, grassland 176, bare soil 131,
            built-up 122, non-photosynthetic veg. 61 (fallow), burned 131
NLCD        water 11; built-up 21, 22, 23, 24; bare soil 31; forest 41, 42, 43;
            non-photosynthetic veg. 52; grassland 71, 81; cropland 82; burned 31
            (no wetland class in the generator: 90 and 95 never occur)
CORINE      built-up 111, 112, 121; cropland 211, 212, 221, 222, 242; grassland 231,
            321; forest 311, 312, 313; non-photosynthetic veg. 322, 324; bare soil 331,
            333; burned 334; water 512
TreeMap     forest -> the 24 FIA forest types of EnMAP-TreeMap; other classes 0
BNETD       forest 1, 2, 3; non-photosynthetic veg. 6; grassland 9, 10; cropland 13;
            bare soil 15; built-up 16; water 21; burned 15. The BNETD legend was not
            available offline, so this assignment is arbitrary.
EuroCrops   cropland -> the 15 HCAT codes of EnMAP-EuroCrops; grassland 3302000000
            (grassland, not kept); polygons of cropland and grassland parcels only
BD Foret    forest -> the 12 codes of EnMAP-BDForet; polygons of forest only
=========== ======================================================================

Raster sources are written per product on the product's own grid
(``<out>/<source>/<product>.tif``, 0 = no label / outside the swath); vector sources are
the polygonised family maps, EuroCrops in EPSG:4326 (``eurocrops.parquet``, column
``EC_hcat_c`` as text like the EuroCrops release) and BD Forêt in Lambert-93, EPSG:2154
(``bdforet.parquet``, column ``code``), so the builder's reprojection is exercised.
The DESIS and EO-1 versions of CDL reuse the CDL source; their images are the EnMAP
patches resampled to the sensors' band tables (:func:`spectralearth.downstream.build.sensor_matrix`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from spectralearth.cards import bdforet, eurocrops, treemap
from spectralearth.cards.cdl import CDL_NAMES
from spectralearth.io import atomic_path, atomic_write_text

CDL_CROPS = tuple(CDL_NAMES)  # the 20 codes of the three CDL datasets

SCHEMAS: dict[str, dict[str, tuple[int, ...]]] = {
    "cdl": {
        "cropland": CDL_CROPS,
        "water": (111,),
        "forest": (141,),
        "grassland": (176,),
        "bare_soil": (131,),
        "built_up": (122,),
        "non_photosynthetic_vegetation": (61,),
        "burned": (131,),
    },
    "nlcd": {
        "water": (11,),
        "built_up": (21, 22, 23, 24),
        "bare_soil": (31,),
        "forest": (41, 42, 43),
        "non_photosynthetic_vegetation": (52,),
        "grassland": (71, 81),
        "cropland": (82,),
        "burned": (31,),
    },
    "corine": {
        "built_up": (111, 112, 121),
        "cropland": (211, 212, 221, 222, 242),
        "grassland": (231, 321),
        "forest": (311, 312, 313),
        "non_photosynthetic_vegetation": (322, 324),
        "bare_soil": (331, 333),
        "burned": (334,),
        "water": (512,),
    },
    "treemap": {"forest": treemap.CODES},
    "bnetd": {
        "forest": (1, 2, 3),
        "non_photosynthetic_vegetation": (6,),
        "grassland": (9, 10),
        "cropland": (13,),
        "bare_soil": (15,),
        "built_up": (16,),
        "water": (21,),
        "burned": (15,),
    },
    "eurocrops": {"cropland": eurocrops.HCAT_CODES, "grassland": (3302000000,)},
    "bdforet": {"forest": bdforet.CODES},
}
RASTER_SOURCES = ("cdl", "nlcd", "corine", "treemap", "bnetd")
VECTOR_SOURCES = {"eurocrops": ("EPSG:4326", "EC_hcat_c"), "bdforet": ("EPSG:2154", "code")}
# Which synthetic source each of the nine datasets is built from.
DATASET_SOURCE = {
    "enmap_cdl": "cdl",
    "desis_cdl": "cdl",
    "eo1_cdl": "cdl",
    "enmap_nlcd": "nlcd",
    "enmap_corine": "corine",
    "enmap_treemap": "treemap",
    "enmap_bnetd": "bnetd",
    "enmap_eurocrops": "eurocrops",
    "enmap_bdforet": "bdforet",
}


@lru_cache(maxsize=64)
def families(class_name: str, k: int, seed: int) -> np.ndarray:
    """Family (0..k-1) of every spectrum of ``class_name``'s pool, by k-means."""
    from sklearn.cluster import KMeans

    from spectralearth.synth.spectra import load_library

    pool = np.asarray(load_library(seed)[class_name], dtype=np.float64)
    if k <= 1:
        return np.zeros(len(pool), dtype=np.int64)
    if k > len(pool):
        raise ValueError(f"{class_name}: {k} families from {len(pool)} spectra")
    # k-means on the leading principal components (fast; they hold the spectral shape)
    centred = pool - pool.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    km = KMeans(n_clusters=k, n_init=2, random_state=0).fit(centred @ vt[:12].T)
    # order families by mean NIR/red ratio so the code order is reproducible and meaningful
    centres = np.stack([pool[km.labels_ == j].mean(0) for j in range(k)])
    order = np.argsort(centres[:, 60] / np.maximum(centres[:, 30], 1e-6), kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[km.labels_]


@dataclass
class ProductGround:
    """What the generator put on one product's grid: class ids and dominant spectrum rows."""

    name: str
    crs: Any
    transform: Any
    classmap: np.ndarray  # uint8, 0 outside the swath
    dominant: np.ndarray  # int64 row of the spectral stack of the dominant endmember


def product_grounds(labels_dir: str | os.PathLike, synth) -> list[ProductGround]:
    """Rebuild each product's ground (see module doc) for the class maps in ``labels_dir``."""
    from spectralearth.synth import CLASSMAP_SUFFIX, plan_acquisitions, site_of
    from spectralearth.synth.scene import spectral_stack

    labels_dir = Path(labels_dir)
    on_disk = {p.name[: -len(CLASSMAP_SUFFIX)]: p for p in labels_dir.glob(f"*{CLASSMAP_SUFFIX}")}
    if not on_disk:
        raise FileNotFoundError(f"{labels_dir}: no *{CLASSMAP_SUFFIX} class maps")
    stack = spectral_stack(synth.seed)
    plan = plan_acquisitions(synth.scenes, synth.size, synth.seed, synth.revisit_fraction)
    acqs = {a.name: a for a in plan}
    unknown = sorted(set(on_disk) - set(acqs))
    if unknown:
        raise ValueError(
            f"{labels_dir}: class maps of {len(unknown)} product(s) the synthetic generator does "
            f"not make with synth settings scenes={synth.scenes}, size={synth.size}, "
            f"seed={synth.seed}, revisit_fraction={synth.revisit_fraction} (e.g. {unknown[0]}); "
            f"pass the settings the archive was written with"
        )
    sites: dict[int, Any] = {}
    out = []
    for name in sorted(on_disk):
        acq = acqs[name]
        place = acq.place
        if place.index not in sites:
            sites[place.index] = site_of(place, synth.seed, stack)
        site = sites[place.index]
        r0, c0 = acq.origin
        win = (slice(r0, r0 + synth.size), slice(c0, c0 + synth.size))
        with rasterio.open(on_disk[name]) as src:
            classmap = src.read(1)
            crs, transform = src.crs, src.transform
        rebuilt = site.classmap[win]
        valid = classmap > 0
        if rebuilt.shape != classmap.shape or not np.array_equal(rebuilt[valid], classmap[valid]):
            raise ValueError(f"{on_disk[name]}: the rebuilt ground does not match this class map")
        slot = site.weight[(slice(None), *win)].argmax(axis=0)
        dominant = np.take_along_axis(site.index[(slice(0, 3), *win)], slot[None], 0)[0]
        out.append(ProductGround(name, crs, transform, classmap, dominant.astype(np.int64)))
    return out


def code_map(ground: ProductGround, schema: str, seed: int) -> np.ndarray:
    """Source codes (int64, 0 = none) of one product under one schema."""
    from spectralearth.synth.scene import CLASS_ID, spectral_stack

    stack = spectral_stack(seed)
    codes = np.zeros(ground.classmap.shape, dtype=np.int64)
    for class_name, class_codes in SCHEMAS[schema].items():
        cid = CLASS_ID[class_name]
        here = ground.classmap == cid
        if not here.any():
            continue
        if len(class_codes) == 1:
            codes[here] = class_codes[0]
            continue
        fam = families(class_name, len(class_codes), seed)
        local = ground.dominant[here] - stack.offsets[cid]
        codes[here] = np.asarray(class_codes, dtype=np.int64)[fam[local]]
    return codes


def _dtype(values: np.ndarray) -> str:
    top = int(values.max()) if values.size else 0
    return "uint8" if top <= 255 else "uint16" if top <= 65535 else "uint32"


def write_synthetic_sources(
    labels_dir: str | os.PathLike, out_dir: str | os.PathLike, synth
) -> dict[str, dict[str, Any]]:
    """Write every schema's synthetic source under ``out_dir``; returns how to open each.

    ``{schema: {"kind": "raster", "paths": [...]}}`` or ``{"kind": "vector", "path",
    "column"}`` (see :func:`open_source`); also written to ``out_dir/sources.json``.
    """
    import geopandas as gpd
    import pandas as pd
    from rasterio.features import shapes
    from shapely.geometry import shape

    out_dir = Path(out_dir)
    grounds = product_grounds(labels_dir, synth)
    spec: dict[str, dict[str, Any]] = {}
    for schema in RASTER_SOURCES:
        paths = []
        for g in grounds:
            codes = code_map(g, schema, synth.seed)
            dtype = _dtype(codes)
            path = out_dir / schema / f"{g.name}.tif"
            with atomic_path(path) as tmp:
                with rasterio.open(
                    tmp, "w", driver="GTiff", width=codes.shape[1], height=codes.shape[0],
                    count=1, dtype=dtype, crs=g.crs, transform=g.transform, nodata=0,
                    compress="deflate",
                ) as dst:  # fmt: skip
                    dst.write(codes.astype(dtype), 1)
                    dst.update_tags(
                        synthetic="spectralearth.downstream.synth_labels", schema=schema
                    )
            paths.append(str(path))
        spec[schema] = {"kind": "raster", "paths": paths}
    for schema, (crs, column) in VECTOR_SOURCES.items():
        frames = []
        for g in grounds:
            codes = code_map(g, schema, synth.seed)
            values, ids = np.unique(codes, return_inverse=True)
            ids = ids.reshape(codes.shape).astype(np.int32)
            mask = codes > 0
            polys = [
                (shape(geom), int(values[int(v)]))
                for geom, v in shapes(ids, mask=mask, transform=g.transform, connectivity=4)
            ]
            if polys:
                frames.append(
                    gpd.GeoDataFrame(
                        {"code": [c for _, c in polys]}, geometry=[p for p, _ in polys], crs=g.crs
                    ).to_crs(crs)
                )
        frame = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs)
        if column != "code":
            frame = frame.rename(columns={"code": column})
            frame[column] = frame[column].astype(str)
        path = out_dir / f"{schema}.parquet"
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, index=False)
        spec[schema] = {"kind": "vector", "path": str(path), "column": column}
    atomic_write_text(out_dir / "sources.json", json.dumps(spec, indent=1))
    return spec


def open_source(spec: dict[str, Any]):
    """A :class:`RasterLabelSource` or :class:`VectorLabelSource` from a ``sources.json`` entry."""
    from spectralearth.downstream.build import RasterLabelSource, VectorLabelSource

    if spec["kind"] == "raster":
        return RasterLabelSource(spec["paths"])
    return VectorLabelSource(spec["path"], spec["column"])


def build_synthetic_downstream(
    patches_root: str | os.PathLike,
    labels_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    synth,
    datasets: list[str] | None = None,
    **build_options,
) -> dict[str, dict[str, Any]]:
    """All nine datasets (or ``datasets``) from curated patches and synthetic sources.

    Sources go to ``<out_dir>/sources/``, datasets to ``<out_dir>/<name>/``;
    ``build_options`` go to :func:`~spectralearth.downstream.build.build_dataset`.
    Returns each dataset's build report.
    """
    from spectralearth.downstream.build import build_dataset, read_patch_grids

    names = list(datasets or DATASET_SOURCE)
    unknown = sorted(set(names) - set(DATASET_SOURCE))
    if unknown:
        raise KeyError(f"no synthetic source for {unknown}; have {', '.join(DATASET_SOURCE)}")
    spec = write_synthetic_sources(labels_dir, Path(out_dir) / "sources", synth)
    grids = read_patch_grids(patches_root)
    opened: dict[str, Any] = {}
    reports = {}
    for name in names:
        schema = DATASET_SOURCE[name]
        if schema not in opened:
            opened[schema] = open_source(spec[schema])
        reports[name] = build_dataset(
            name, patches_root, opened[schema], out_dir, grids=grids, **build_options
        )
    return reports
