"""Folders curated before the single-copy store (GeoTIFFs + ``shards/*.npy`` + manifest, no
checksums): they still train from their shards, the checked readers refuse them naming the
migration, and ``migrate_store`` turns them into a checked store with half the bytes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio

from spectralearth.config import load_settings
from spectralearth.data.dataset import PatchDataset
from spectralearth.data.shards import ShardSource
from spectralearth.patches.migrate import MigrationError, migrate_store
from spectralearth.patches.reader import open_store
from spectralearth.patches.store import STORE_COLUMNS, StaleIndexError, read_index
from spectralearth.stages.curate import curate_archive
from tests.helpers import write_params


def _make_legacy(root) -> None:
    """Rewrite a curated folder as the shard-era code left it: one .npy per scene, fragments
    and index with shard columns instead of the store's, a shard manifest, no version."""
    (root / "shards").mkdir()
    for frag in sorted((root / "scenes").glob("*.parquet")):
        rows = pd.read_parquet(frag)
        index = read_index(root)
        paths = index.set_index(["location_key", "scene_id"])["path"]
        pixels = []
        for rec in rows.to_dict("records"):
            with rasterio.open(root / paths.loc[(rec["location_key"], rec["scene_id"])]) as src:
                pixels.append(src.read())
        if pixels:
            np.save(root / "shards" / f"{frag.stem}.npy", np.stack(pixels))
        rows = rows.drop(columns=list(STORE_COLUMNS))
        rows["shard"], rows["shard_index"] = f"{frag.stem}.npy", np.arange(len(rows))
        rows.to_parquet(frag, index=False)
    index = read_index(root)
    shard_of = {p: f"{s}.npy" for p, s in zip(index["path"], index["product"], strict=True)}
    index = index.drop(columns=list(STORE_COLUMNS))
    index["shard"] = index["path"].map(shard_of)
    order = {}
    for frag in sorted((root / "scenes").glob("*.parquet")):  # shard rows in fragment order
        rows = pd.read_parquet(frag)
        for i, key in enumerate(zip(rows["location_key"], rows["scene_id"], strict=True)):
            order[key] = i
    index["shard_index"] = [
        order[k] for k in zip(index["location_key"], index["scene_id"], strict=True)
    ]
    index.attrs = {}
    index.to_parquet(root / "index.parquet", index=False)
    manifest = index.rename(columns={"shard_index": "index"})[
        ["patch_id", "location_id", "scene_id", "datetime", "split", "shard", "index"]
    ]
    pd.DataFrame(manifest).to_parquet(root / "shards" / "manifest.parquet", index=False)


@pytest.fixture
def legacy(tiny_archive, tmp_path):
    settings = load_settings(write_params(tmp_path / "cfg"))
    products = sorted(p for p in tiny_archive.iterdir() if p.is_dir())[:3]
    root = tmp_path / "legacy"
    curate_archive(products, root, settings.curate, log=lambda *_: None)
    expected = {r: (root / r).read_bytes() for r in read_index(root)["path"]}
    _make_legacy(root)
    return root, expected


def _bytes(root) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_a_shard_era_folder_still_trains_from_its_shards_and_readers_name_the_migration(legacy):
    root, _ = legacy
    ds = PatchDataset(root, split="train")
    assert isinstance(ds.source, ShardSource) and len(ds) > 0
    index = read_index(root)
    row = ds.rows.iloc[0]
    path = index.set_index("patch_id").loc[row["patch_id"], "path"]
    with rasterio.open(root / path) as src:
        assert np.array_equal(ds.patch(0).numpy(), src.read().astype(np.float32))
    with pytest.raises(StaleIndexError, match="migrate-store"):
        open_store(root)  # statistics and the downstream builders read through this


def test_migrate_store_checks_the_two_copies_then_keeps_one(legacy):
    root, expected = legacy
    before = _bytes(root)
    res = migrate_store(root, 0.2, 0.2)
    assert res.scenes_migrated == 3 and res.patches == len(expected)
    assert not (root / "shards").exists() and _bytes(root) < 0.6 * before
    assert res.shard_bytes_removed > 0 and res.summary().startswith("migrate-store: 3 scene(s)")
    store = open_store(root)
    assert store.version == res.index_version
    for i, path in enumerate(store.index["path"]):
        assert (root / path).read_bytes() == expected[path]  # the GeoTIFFs untouched
        with rasterio.open(root / path) as src:
            assert np.array_equal(store.read(i), src.read())
    again = migrate_store(root, 0.2, 0.2)  # a rerun: nothing left to migrate
    assert again.scenes_migrated == 0 and again.index_version == res.index_version


def test_migration_stops_naming_both_files_when_the_copies_disagree(legacy):
    root, _ = legacy
    shard = sorted((root / "shards").glob("*.npy"))[0]
    arr = np.load(shard)
    arr[0, 0, 0, 0] += 1
    np.save(shard, arr)
    fragments = {f: f.read_bytes() for f in (root / "scenes").glob("*.parquet")}
    with pytest.raises(MigrationError) as err:
        migrate_store(root, 0.2, 0.2)
    assert str(shard) in str(err.value) and "hold different pixels" in str(err.value)
    assert (root / "shards").exists()
    # the scenes before the bad one may be migrated already; the bad one is untouched
    assert (
        fragments[root / "scenes" / f"{shard.stem}.parquet"]
        == (root / "scenes" / f"{shard.stem}.parquet").read_bytes()
    )
