"""Batched reads from the training shards: the same patches as item-by-item reads, and a
thread-prefetching loader that covers each item once per epoch (disjoint across ranks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from spectralearth.data.shards import ShardBatchLoader, ShardPatches
from tests.helpers import make_shards


@pytest.fixture
def shards(tmp_path):
    return make_shards(tmp_path, n_locations=10, two_date_locations=(0, 1, 2, 3, 4), patch=8)


@pytest.mark.parametrize(
    "mode", [{}, {"per_location": True}, {"two_dates": True}, {"normalize": False}]
)
def test_batched_reads_equal_item_reads(shards, mode):
    shards_dir, stats = shards[:2]
    ds = ShardPatches(shards_dir, stats=stats, seed=3, **mode)
    ds.set_epoch(2)
    items = [5, 0, 3, 3, 1]
    batch = ds.get_batch(items)
    singles = [ds[i] for i in items]
    if isinstance(batch, tuple):
        for view, k in zip(batch, (0, 1), strict=True):
            assert torch.equal(view, torch.stack([s[k] for s in singles]))
    else:
        assert batch.dtype == singles[0].dtype and torch.equal(batch, torch.stack(singles))
    # DataLoader's batched fetch (__getitems__) gives the same batch through collate
    loader = DataLoader(ds, batch_size=5, sampler=items, num_workers=0)
    collated = next(iter(loader))
    if isinstance(batch, tuple):
        assert all(torch.equal(a, b) for a, b in zip(collated, batch, strict=True))
    else:
        assert torch.equal(collated, batch)


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_loader_covers_each_item_once_per_epoch_and_splits_ranks(shards, workers):
    shards_dir, stats = shards[:2]
    ds = ShardPatches(shards_dir, stats=stats)
    n = len(ds)
    seen_by_rank = []
    for rank in range(2):
        loader = ShardBatchLoader(ds, 2, num_workers=workers, seed=1, rank=rank, world_size=2)
        loader.set_epoch(4)
        got = torch.cat(list(loader))
        assert len(loader) == (n // 2) // 2 and got.shape[0] == len(loader) * 2
        seen_by_rank.append({_row_of(ds, x) for x in got})
    assert not seen_by_rank[0] & seen_by_rank[1]  # ranks read disjoint items
    a = ShardBatchLoader(ds, 2, num_workers=workers, seed=1)
    b = ShardBatchLoader(ds, 2, num_workers=workers, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # seeded
    b.set_epoch(1)
    assert not all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # reshuffled


def _row_of(ds: ShardPatches, x: torch.Tensor) -> int:
    for row in range(ds.n_patches):
        if torch.equal(ds.patch(row), x):
            return row
    raise AssertionError("batch holds a patch that is not in the split")


def test_batch_loader_draws_with_replacement_when_the_split_is_smaller_than_a_batch(shards):
    shards_dir, stats = shards[:2]
    ds = ShardPatches(shards_dir, stats=stats, split="val")
    loader = ShardBatchLoader(ds, 4, replacement_to=4)
    (batch,) = list(loader)
    assert batch.shape[0] == 4 and len(ds) < 4
    assert np.isfinite(batch.numpy()).all()
