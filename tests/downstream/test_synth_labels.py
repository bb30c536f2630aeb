"""The embedded default: nine datasets from the synthetic archive's class maps, via the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio

from spectralearth.config import load_settings
from spectralearth.downstream.datasets.base import ReleasedDataset, get_card
from spectralearth.downstream.datasets.registry import PAPER_DATASETS, describe_datasets
from spectralearth.downstream.synth_labels import (
    SCHEMAS,
    code_map,
    families,
    product_grounds,
)
from tests.helpers import write_params


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """3 scenes of 64 px curated into 16 px patches (a few seconds)."""
    from spectralearth.stages.curate import curate_archive
    from spectralearth.stages.ingest import catalog, ok_products, synth_archive

    folder = tmp_path_factory.mktemp("synth_labels")
    params = write_params(
        folder,
        synth={"scenes": 3, "size": 64, "seed": 5, "revisit_fraction": 0.34},
        curate={"patch_size": 16, "max_cloud_frac": 0.2, "max_snow_frac": 1.0},
    )
    s = load_settings(params)
    synth_archive(s.synth, s.layout.archive, s.layout.labels)
    catalog(s.layout.archive, s.layout.catalog)
    curate_archive(ok_products(s.layout.catalog), s.layout.patches, s.curate, log=lambda *_: None)
    return params


@pytest.fixture(scope="module")
def built(project) -> dict:
    from spectralearth.cli import main

    out = project.parent / "data" / "downstream"
    assert main(["--params", str(project), "build-datasets", "--split", "block"]) == 0
    return {n: json.loads((out / n / "build.json").read_text()) for n in PAPER_DATASETS}


def test_all_nine_are_built_and_load(built, project):
    out = project.parent / "data" / "downstream"
    for name in PAPER_DATASETS:
        info = get_card(name)
        report = built[name]
        assert report["kept"] > 0 and report["not_covered"] == 0, name
        assert report["split_scheme"] == "block"
        ds = ReleasedDataset(out / name, name, "train")
        image, target = ds[0]
        assert image.shape[0] == info.bands
        if info.task == "segmentation":
            assert (target >= 0).any()
    # land cover covers every patch; crops and trees only those with fields / forest
    assert built["enmap_nlcd"]["kept"] == built["enmap_nlcd"]["patches"]
    rows = {r["name"]: r for r in describe_datasets(out)}
    assert all(rows[n]["status"] == "present" for n in PAPER_DATASETS)


def test_crop_and_tree_codes_follow_the_generator_classes(built, project):
    s = load_settings(project)
    grounds = product_grounds(s.layout.labels, s.synth)
    for g in grounds:
        from spectralearth.synth.scene import CLASS_ID

        cdl = code_map(g, "cdl", s.synth.seed)
        crops = np.isin(cdl, SCHEMAS["cdl"]["cropland"])
        assert np.array_equal(crops, g.classmap == CLASS_ID["cropland"])
        trees = code_map(g, "treemap", s.synth.seed)
        assert np.array_equal(trees > 0, g.classmap == CLASS_ID["forest"])
        nlcd = code_map(g, "nlcd", s.synth.seed)
        assert np.array_equal(nlcd == 11, g.classmap == CLASS_ID["water"])
        assert (nlcd[g.classmap == 0] == 0).all()


def test_families_are_distinct_spectral_clusters():
    from spectralearth.synth.spectra import load_library

    pool = np.asarray(load_library(5)["forest"], dtype=float)
    fam = families("forest", 12, 5)
    assert set(fam) == set(range(12))
    centres = np.stack([pool[fam == k].mean(0) for k in range(12)])
    within = np.mean(
        [np.linalg.norm(pool[fam == k] - centres[k], axis=1).mean() for k in range(12)]
    )
    between = np.mean(
        [np.linalg.norm(centres[a] - centres[b]) for a in range(12) for b in range(a + 1, 12)]
    )
    assert between > within
    assert np.array_equal(fam, families("forest", 12, 5))


def test_other_archive_settings_are_refused(project):
    s = load_settings(project)
    with pytest.raises(ValueError, match="settings"):
        product_grounds(s.layout.labels, replace(s.synth, seed=s.synth.seed + 1))


def test_sources_are_in_their_products_crs(built, project):
    src_dir = project.parent / "data" / "downstream" / "sources"
    spec = json.loads((src_dir / "sources.json").read_text())
    import geopandas as gpd

    assert gpd.read_parquet(spec["eurocrops"]["path"]).crs.to_epsg() == 4326
    assert gpd.read_parquet(spec["bdforet"]["path"]).crs.to_epsg() == 2154
    with rasterio.open(spec["corine"]["paths"][0]) as r:
        assert r.crs.to_epsg() in (32631, 32632, 32633, 32634) and r.dtypes[0] == "uint16"
