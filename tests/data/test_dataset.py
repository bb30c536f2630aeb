"""The training dataset over the single-copy store (a curated folder or a released tree):
the same patches as rasterio reads, batched reads equal item reads, DataLoader worker
processes and the thread loader work on it, and each path form finds its source."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from spectralearth.data.dataset import PatchBatchLoader, PatchDataset, open_training_source
from spectralearth.data.shards import ShardSource
from spectralearth.patches.reader import PatchStore
from spectralearth.patches.release import index_release
from tests.helpers import make_release, make_shards


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "tree"
    pixels = make_release(root, "--locations", "8")
    index_release(root, val_frac=0.0, test_frac=0.0)
    return root, pixels


def test_items_are_the_files_pixels_and_batches_equal_items(tree):
    root, pixels = tree
    ds = PatchDataset(root, normalize=False)
    assert isinstance(ds.source, PatchStore) and ds.n_patches == len(pixels)
    for row in range(ds.n_patches):
        path = ds.rows["path"].iat[row]
        with rasterio.open(root / path) as src:
            assert torch.equal(ds.patch(row), torch.from_numpy(src.read()))
    for mode in ({}, {"per_location": True}, {"two_dates": True}):
        ds = PatchDataset(root, seed=2, **mode)
        items = [3, 0, 2, 2]
        batch, singles = ds.get_batch(items), [ds[i] for i in items]
        if isinstance(batch, tuple):
            for k, view in enumerate(batch):
                assert torch.equal(view, torch.stack([s[k] for s in singles]))
        else:
            assert torch.equal(batch, torch.stack(singles))


def test_two_dates_pair_the_dated_files_of_a_location(tree):
    root, _ = tree
    ds = PatchDataset(root, two_dates=True, seed=1)
    two = [i for i in range(len(ds)) if ds.n_dates(i) == 2]
    assert len(two) == 4  # locations 2, 4, 6, 8
    for i in two:
        r1, r2 = ds.pair_rows(i)
        assert ds.rows["datetime"].iat[r1] != ds.rows["datetime"].iat[r2]


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_processes_and_the_thread_loader_read_the_store(tree, workers):
    root, _ = tree
    ds = PatchDataset(root, normalize=False)
    loader = DataLoader(ds, batch_size=4, num_workers=workers, shuffle=False)
    got = torch.cat(list(loader))
    assert torch.equal(got, ds.gather(np.arange(len(ds))))
    threads = PatchBatchLoader(ds, 4, num_workers=workers, shuffle=False, drop_last=False)
    assert torch.equal(torch.cat(list(threads)), got)


def test_each_path_form_finds_its_source(tree, tmp_path):
    root, _ = tree
    assert isinstance(open_training_source(root), PatchStore)
    assert isinstance(open_training_source(root / "shards"), PatchStore)  # older callers' path
    shards_dir = make_shards(tmp_path / "legacy")[0]
    assert isinstance(open_training_source(shards_dir), ShardSource)
    with pytest.raises(FileNotFoundError) as err:
        open_training_source(tmp_path / "nothing")
    assert "index.parquet" in str(err.value) and "manifest.parquet" in str(err.value)


def test_a_store_too_large_to_keep_mapped_reads_each_block_with_pread(tree, monkeypatch):
    import spectralearth.patches.reader as reader

    root, pixels = tree
    mapped = reader.open_store(root)
    monkeypatch.setattr(reader, "MAX_MAPS", 2)
    store = reader.open_store(root)
    assert mapped.mapped and not store.mapped
    for i, path in enumerate(store.index["path"]):
        assert np.array_equal(store.read(i), pixels[path])
        assert np.array_equal(store.read(i), mapped.read(i))
    assert not store._maps  # nothing mapped
