"""Fixtures of the validation tests: the tiny archive curated once."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import tiny_params


@pytest.fixture(scope="session")
def template(tiny_archive, tmp_path_factory):
    """The tiny archive curated once (patches, registry, index) as (folder, products); tests
    work on copies of the folder."""
    from spectralearth.config import load_settings
    from spectralearth.stages.curate import curate_archive

    folder = tmp_path_factory.mktemp("gates")
    params = tiny_params(folder / "data")
    params["archive_dir"] = str(tiny_archive)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_settings(folder / "params.yaml")
    products = sorted(p for p in tiny_archive.iterdir() if p.is_dir())
    curate_archive(products, settings.layout.patches, settings.curate, log=lambda *_: None)
    # as the Dagster path leaves it before band_statistics runs: the tests choose whether the
    # drift warning has the folder's own statistics as its reference
    settings.layout.curated.stats.unlink()
    return settings.layout.patches, products
