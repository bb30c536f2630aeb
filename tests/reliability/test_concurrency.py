"""Concurrency: scenes curated in parallel processes lose no index rows and never give one
place two location ids, even when the id space is nearly full and locations move."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import rasterio

from spectralearth.config import load_settings
from spectralearth.patches.store import build_index
from tests.helpers import REPO, write_params


def _curate_some(args) -> int:
    products, root, params, slots = args
    import spectralearth.patches.grid as grid
    from spectralearth.patches.curate import curate_scene

    before, grid.MAX_LOCATION_ID = grid.MAX_LOCATION_ID, slots  # nearly full: ids move
    try:
        settings = load_settings(params)
        for product in products:
            curate_scene(product, root, settings.curate)
    finally:
        grid.MAX_LOCATION_ID = before
    return len(products)


def _index(root, slots):
    import spectralearth.patches.grid as grid

    before, grid.MAX_LOCATION_ID = grid.MAX_LOCATION_ID, slots
    try:
        return build_index(root, 0.2, 0.2)
    finally:
        grid.MAX_LOCATION_ID = before


def test_parallel_curation_loses_nothing_and_gives_one_id_per_place(tiny_archive, tmp_path):
    params = write_params(tmp_path / "cfg")
    products = sorted(p for p in tiny_archive.iterdir() if p.is_dir())
    serial_root, parallel_root = tmp_path / "serial", tmp_path / "parallel"
    _curate_some((products, serial_root, params, 10**7 - 1))
    n_keys = _index(serial_root, 10**7 - 1)["location_key"].nunique()
    slots = n_keys + 3
    _curate_some((products, serial_root.with_name("serial-small"), params, slots))
    serial = _index(serial_root.with_name("serial-small"), slots)

    # three processes, each with interleaved scenes, started together
    jobs = [(products[i::3], parallel_root, params, slots) for i in range(3)]
    with mp.get_context("fork").Pool(3) as pool:
        assert sum(pool.map(_curate_some, jobs)) == len(products)
    parallel = _index(parallel_root, slots)

    assert len(parallel) == len(serial)  # no lost or duplicated rows
    assert not parallel["patch_id"].duplicated().any()
    ids = parallel.groupby("location_key")["location_id"].nunique()
    assert (ids == 1).all()  # one id per place
    keys = parallel.groupby("location_id")["location_key"].nunique()
    assert (keys == 1).all()  # one place per id
    by_key = lambda ix: dict(zip(ix["location_key"], ix["location_id"], strict=True))  # noqa: E731
    assert by_key(parallel.drop_duplicates("location_key")) == by_key(
        serial.drop_duplicates("location_key")
    )
    for rec in parallel.to_dict("records"):  # every file sits under its location's id
        with rasterio.open(parallel_root / rec["path"]) as src:
            assert src.tags()["location_key"] == rec["location_key"]


def test_dagster_runs_of_two_partitions_at_once_share_one_registry(
    archive_copy, tmp_path, monkeypatch
):
    """Two `dagster asset materialize` processes on different scene partitions at the same
    time, as a backfill with two run workers would do."""
    params = write_params(tmp_path / "cfg")
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}:{REPO}",
        "SPECTRALEARTH_PARAMS": str(params),
        "SPECTRALEARTH_DATA_DIR": str(archive_copy.parent),
        "DAGSTER_HOME": str(home),
    }

    def materialize(select: str, partition: str | None = None) -> subprocess.Popen:
        dagster = str(Path(sys.executable).with_name("dagster"))
        cmd = [dagster, "asset", "materialize", "-m", "dagster_project.definitions"]
        cmd += ["--select", select] + (["--partition", partition] if partition else [])
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    # the partitions the sensor would register (curation reads the product from the archive)
    keys = sorted(p.name for p in archive_copy.iterdir() if p.is_dir())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("scenes", keys)
    start = time.monotonic()
    runs = [materialize("curated_patches", k) for k in keys[:2]]
    logs = [r.communicate(timeout=600)[0].decode() for r in runs]
    assert all(r.returncode == 0 for r in runs), "\n".join(x[-2000:] for x in logs)
    assert time.monotonic() - start < 600

    monkeypatch.setenv("SPECTRALEARTH_DATA_DIR", str(archive_copy.parent))
    settings = load_settings(params)
    index = build_index(settings.layout.patches, 0.2, 0.2)
    assert set(index["product"]) == set(keys[:2])  # both runs' rows, none lost
    assert (index.groupby("location_key")["location_id"].nunique() == 1).all()
    assert not index["patch_id"].duplicated().any()


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
