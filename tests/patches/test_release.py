"""Indexing a released SpectralEarth tree (tests/data/release/make_release.py) so that it
trains without curating: locations, scenes, footprints, offsets, a location-disjoint split;
a compressed file read the slow way with the same pixels; a corrupt file named, then left
out or refused as the flag says."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from spectralearth.data.dataset import PatchDataset
from spectralearth.patches.reader import StoreIntegrityError, open_store
from spectralearth.patches.release import ReleaseIndexError, index_release
from spectralearth.patches.stats import check_stats, compute_band_stats
from spectralearth.patches.store import index_version, read_index
from tests.helpers import make_release

MAKER = "tests/data/release/make_release.py"


@pytest.fixture
def release(tmp_path):
    root = tmp_path / "spectral_earth"
    pixels = make_release(root, "--corrupt")
    return root, pixels


def _corrupt():
    import runpy

    return runpy.run_path(MAKER)["CORRUPT"]


def test_a_corrupt_file_stops_the_index_naming_it_and_writes_nothing(release):
    root, _ = release
    with pytest.raises(ReleaseIndexError) as err:
        index_release(root)
    assert str(root / _corrupt()) in str(err.value) and "--skip-unreadable" in str(err.value)
    assert not (root / "index.parquet").exists()


def test_skip_unreadable_indexes_the_rest_with_the_layout_s_ids_and_footprints(release):
    root, pixels = release
    res = index_release(root, skip_unreadable=True, val_frac=0.2, test_frac=0.2)
    assert list(res.skipped) == [_corrupt()] and "not recognized" in res.skipped[_corrupt()]
    assert res.patches == len(pixels) and res.summary().startswith("index-release: 9 patches")
    assert json.dumps(res.metadata())  # what the Dagster asset shows
    index = read_index(root)
    assert res.index_version == index_version(root)
    assert sorted(index["path"]) == sorted(pixels)
    for rec in index.to_dict("records"):
        loc, scene = rec["path"].split("/")[1:]
        assert rec["location_id"] == int(loc) and rec["scene_id"] == int(scene[:5])
        assert rec["patch_id"] == f"{loc}/{scene[:5]}"
        with rasterio.open(root / rec["path"]) as src:
            assert rec["geometry_native"] == __import__("shapely").geometry.box(*src.bounds).wkt
            assert rec["crs"] == "EPSG:32633" and rec["n_bands"] == 202
    assert index.groupby("location_id")["split"].nunique().max() == 1  # location-disjoint
    # the fast path where the file is laid out for it, the slow path (rasterio) elsewhere
    layout = dict(zip(index["path"], index["data_offset"], strict=True))
    assert layout["enmap/0000002/00003.tif"] == -1  # DEFLATE
    assert layout["enmap/0000003/00004.tif"] == -1  # pixel-interleaved
    assert sum(v > 0 for v in layout.values()) == len(layout) - 2
    store = open_store(root)
    for i, path in enumerate(store.index["path"]):
        assert np.array_equal(store.read(i), pixels[path]), path
    dated = index.dropna(subset=["datetime"])
    assert set(dated["location_id"]) == {2, 4, 6}  # the files that carry a datetime tag


def test_pretraining_runs_on_an_indexed_released_tree(release, tmp_path, one_torch_thread):
    """`index_release ROOT`, `stats`, then pretraining straight from ROOT (no curation)."""
    from spectralearth.ssl.train import pretrain
    from tests.helpers import tiny_settings

    root, _ = release
    index_release(root, skip_unreadable=True, val_frac=0.0, test_frac=0.0)
    stats = compute_band_stats(root, tmp_path / "stats.json")
    check_stats(root, stats)
    assert stats["split"] == "train" and stats["n_patches"] == 9
    ds = PatchDataset(root, split="train", two_dates=True)
    assert len(ds) == 6 and sorted(ds.n_dates(i) for i in range(6)) == [1, 1, 1, 2, 2, 2]
    settings = tiny_settings(steps=2, batch_size=4, crop_size=16, memory_bank_size=8)
    run = pretrain(settings, root, stats, tmp_path / "model", progress=False)
    assert run["steps"] == 2 and np.isfinite(run["final_loss"])
    assert run["train_patches"] == 9 and run["train_locations"] == 6


def test_a_released_file_changed_after_indexing_is_refused_with_the_fix(release):
    root, pixels = release
    index_release(root, skip_unreadable=True)
    victim = root / "enmap/0000002/00003.tif"  # the compressed one: checked all the same
    with rasterio.open(victim, "r+") as dst:
        dst.write(np.zeros((202, 16, 16), dtype=np.int16))
    with pytest.raises(StoreIntegrityError) as err:
        open_store(root)
    assert str(victim) in str(err.value) and "index-release" in str(err.value)


def test_a_tree_without_the_layout_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a released SpectralEarth tree"):
        index_release(tmp_path)
    (tmp_path / "enmap" / "abc").mkdir(parents=True)
    (tmp_path / "enmap" / "abc" / "x.tif").write_bytes(b"")
    with pytest.raises(ReleaseIndexError, match=r"enmap/abc/x.tif: not named"):
        index_release(tmp_path)
    (tmp_path / "scenes").mkdir()  # a curated folder: its index is curation's
    with pytest.raises(ReleaseIndexError, match="is a curated folder"):
        index_release(tmp_path)


def test_the_cli_indexes_a_released_tree_and_pretrains_on_it(release, tmp_path, monkeypatch):
    """The user's journey with a downloaded release: `index-release ROOT` refuses the tree
    naming its corrupt file (no index written), `--skip-unreadable` indexes the rest, `stats
    --patches ROOT`, then `pretrain --data ROOT` trains and registers a model from it."""
    import subprocess
    import sys

    from tests.helpers import write_params

    for var in ("SPECTRALEARTH_DATA_DIR", "SPECTRALEARTH_PARAMS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    root, pixels = release
    params = write_params(
        tmp_path / "project", curate={"val_frac": 0.0, "test_frac": 0.0}, pretrain={}
    )

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "spectralearth.cli", "--params", str(params), *args],
            capture_output=True,
            text=True,
        )

    refused = cli("index-release", str(root))
    assert refused.returncode == 1
    assert str(root / _corrupt()) in refused.stderr and "--skip-unreadable" in refused.stderr
    assert not (root / "index.parquet").exists()

    indexed = cli("index-release", str(root), "--skip-unreadable")
    assert indexed.returncode == 0, indexed.stderr
    assert f"SKIPPED {_corrupt()}" in indexed.stdout
    assert sorted(read_index(root)["path"]) == sorted(pixels)
    assert cli("stats", "--patches", str(root)).returncode == 0

    out = tmp_path / "model"
    run = cli("pretrain", "--data", str(root), "--out", str(out), "--crop-size", "16")
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    assert record["train_patches"] == len(pixels)
    assert record["band_stats"]["source"] == str(root / "band_stats.json")
