"""Torch dataset over the curated training shards (``<patches>/shards/``).

Layout written by the curation stage:

- ``manifest.parquet``: one row per patch with patch_id, location_id, scene_id, datetime
  (UTC), split (train/val/test), shard (file name) and index (row within that shard);
- ``<shard>.npy``: int16 [n, bands, P, P], reflectance x 10000, memory-mapped on read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

MANIFEST = "manifest.parquet"
MANIFEST_COLUMNS = ("patch_id", "location_id", "scene_id", "datetime", "split", "shard", "index")


def read_manifest(shards_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(shards_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"shard manifest not found: {path}")
    manifest = pd.read_parquet(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return manifest


class ShardPatches(Dataset):
    """Patches of one split, normalised per band as ``(x - mean) / std``.

    ``two_dates=False``: item i is patch i of the split, a float32 tensor [bands, P, P].

    ``per_location=True``: item i is location i of the split, one of its dates drawn at
    random each epoch (seeded by (seed, epoch, i)), so multi-date places are not
    over-represented.

    ``two_dates=True``: item i is location i of the split and returns a pair of tensors,
    two patches of that location taken on different dates (a random pair from a generator
    seeded by (seed, epoch, i)); a location seen on one date only gives its patch twice.
    Call :meth:`set_epoch` to draw new pairs each epoch.

    ``stats`` is the band-statistics dict ({"mean": [...], "std": [...]}, reflectance x
    10000); without it the raw values are returned as float32.
    """

    def __init__(
        self,
        shards_dir: str | os.PathLike,
        split: str = "train",
        stats: dict | None = None,
        two_dates: bool = False,
        seed: int = 0,
        per_location: bool = False,
        normalize: bool = True,
    ) -> None:
        self.shards_dir = Path(shards_dir)
        self.split = split
        self.two_dates = two_dates
        self.per_location = per_location or two_dates
        # normalize=False yields raw int16 (half the bytes between processes); normalise on
        # the device with BandNormalize, as the training loop does
        self.normalize = normalize
        self.seed = int(seed)
        self.epoch = 0
        manifest = read_manifest(self.shards_dir)
        rows = manifest[manifest["split"] == split]
        rows = rows.sort_values(["location_id", "datetime", "patch_id"], kind="stable")
        self.rows = rows.reset_index(drop=True)
        self._shard = self.rows["shard"].astype(str).to_numpy()
        self._index = self.rows["index"].astype(np.int64).to_numpy()
        # Per location: the row numbers of its patches grouped by distinct date.
        self.locations: list[int] = []
        self._dates: list[list[np.ndarray]] = []
        if len(self.rows):
            for loc, group in self.rows.groupby("location_id", sort=True):
                by_date = group.groupby("datetime", sort=True, dropna=False).indices
                self.locations.append(int(loc))
                self._dates.append([group.index.to_numpy()[i] for i in by_date.values()])
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        if stats is not None:
            mean = np.asarray(stats["mean"], dtype=np.float32)
            std = np.asarray(stats["std"], dtype=np.float32)
            if mean.shape != std.shape or mean.ndim != 1:
                raise ValueError(f"band stats: mean {mean.shape} and std {std.shape} differ")
            self._mean = mean[:, None, None]
            self._std = np.maximum(std, 1e-6)[:, None, None]
        self._arrays: dict[str, np.ndarray] = {}

    # -- pickling for DataLoader workers: memory maps are reopened in each process
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    @property
    def n_patches(self) -> int:
        return len(self.rows)

    @property
    def n_locations(self) -> int:
        return len(self.locations)

    @property
    def n_bands(self) -> int:
        """Band count of the shards (from the first row's shard; 0 for an empty split)."""
        return int(self._array(self._shard[0]).shape[1]) if len(self.rows) else 0

    @property
    def patch_size(self) -> int:
        return int(self._array(self._shard[0]).shape[-1]) if len(self.rows) else 0

    def n_dates(self, location_index: int) -> int:
        return len(self._dates[location_index])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_locations if self.per_location else self.n_patches

    def _array(self, shard: str) -> np.ndarray:
        arr = self._arrays.get(shard)
        if arr is None:
            arr = np.load(self.shards_dir / shard, mmap_mode="r")
            if arr.ndim != 4:
                raise ValueError(
                    f"{self.shards_dir / shard}: expected [n, bands, P, P], got {arr.shape}"
                )
            if self._mean is not None and arr.shape[1] != self._mean.shape[0]:
                raise ValueError(
                    f"{self.shards_dir / shard}: {arr.shape[1]} bands but band stats "
                    f"have {self._mean.shape[0]}"
                )
            self._arrays[shard] = arr
        return arr

    def patch(self, row: int) -> torch.Tensor:
        """Row ``row`` of the split as a normalised float32 tensor [bands, P, P]."""
        if not self.normalize:
            return torch.from_numpy(np.array(self._array(self._shard[row])[self._index[row]]))
        x = np.asarray(self._array(self._shard[row])[self._index[row]], dtype=np.float32)
        if self._mean is not None:
            x = (x - self._mean) / self._std
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def pair_rows(self, location_index: int) -> tuple[int, int]:
        """Rows of the two views of a location: two different dates when it has them."""
        rng = np.random.default_rng([self.seed, self.epoch, location_index])
        dates = self._dates[location_index]
        if len(dates) >= 2:
            d1, d2 = rng.choice(len(dates), size=2, replace=False)
            return int(rng.choice(dates[d1])), int(rng.choice(dates[d2]))
        row = int(rng.choice(dates[0]))
        return row, row

    def date_row(self, location_index: int) -> int:
        """Row of one date of a location, drawn anew each epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, location_index, 1])
        dates = self._dates[location_index]
        return int(rng.choice(dates[int(rng.integers(len(dates)))]))

    def __getitem__(self, i: int):
        if not self.per_location:
            return self.patch(i)
        if not self.two_dates:
            return self.patch(self.date_row(i))
        r1, r2 = self.pair_rows(i)
        x1 = self.patch(r1)
        return x1, (x1.clone() if r2 == r1 else self.patch(r2))

    def rows_of(self, items) -> list[np.ndarray]:
        """Split rows for items: one array, or two (the two views) when ``two_dates``."""
        items = [int(i) for i in items]
        if not self.per_location:
            return [np.asarray(items, dtype=np.int64)]
        if not self.two_dates:
            return [np.asarray([self.date_row(i) for i in items], dtype=np.int64)]
        pairs = np.asarray([self.pair_rows(i) for i in items], dtype=np.int64).reshape(-1, 2)
        return [pairs[:, 0], pairs[:, 1]]

    def gather(self, rows: np.ndarray) -> torch.Tensor:
        """Rows as one batch [len(rows), bands, P, P], each patch copied once from its
        memory-mapped shard straight into the batch array (no per-patch tensors, no stack)."""
        rows = np.asarray(rows, dtype=np.int64)
        first = self._array(self._shard[rows[0]])
        out = np.empty((len(rows), *first.shape[1:]), dtype=np.int16)
        for k, row in enumerate(rows):
            out[k] = self._array(self._shard[row])[self._index[row]]
        if not self.normalize:
            return torch.from_numpy(out)
        x = out.astype(np.float32)
        if self._mean is not None:
            x -= self._mean
            x /= self._std
        return torch.from_numpy(x)

    def get_batch(self, items):
        """Items as a collated batch: a tensor, or a pair of tensors when ``two_dates``."""
        views = [self.gather(r) for r in self.rows_of(items)]
        return views[0] if len(views) == 1 else tuple(views)

    def __getitems__(self, items) -> list:
        # DataLoader's batched fetch: one gather per batch, returned as samples for collate
        batch = self.get_batch(items)
        return list(zip(*batch, strict=True)) if isinstance(batch, tuple) else list(batch)


class ShardBatchLoader:
    """Batches straight from the memory-mapped shards, prefetched by a pool of threads.

    Why threads, not DataLoader processes: reading a shard batch is a memory copy out of the
    page cache (numpy releases the GIL while copying), so sending the batch from a worker
    process to the trainer (shared-memory allocation and page faults for ~6.6 MB a patch)
    would cost more than reading it (see benchmarks/bench_loader.py). The same idea as
    FFCV's thread-based loader.

    Yields what ``ShardPatches.get_batch`` returns. Shuffled per epoch from ``(seed, epoch)``;
    ``rank``/``world_size`` give each DDP process a disjoint slice of the same permutation.
    """

    def __init__(
        self,
        dataset: ShardPatches,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        num_workers: int = 2,
        prefetch: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        replacement_to: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.num_workers, self.prefetch = max(0, int(num_workers)), max(1, int(prefetch))
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.replacement_to = replacement_to  # draw this many items with replacement
        self.pin_memory = pin_memory  # page-locked batches for fast host-to-GPU copies
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.dataset.set_epoch(epoch)

    def _order(self) -> np.ndarray:
        n = len(self.dataset)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.replacement_to:
            order = rng.integers(0, n, size=self.replacement_to)
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        per_rank = len(order) // self.world_size
        return order[self.rank * per_rank : (self.rank + 1) * per_rank]

    def _batches(self) -> list[np.ndarray]:
        order = self._order()
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        return [order[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self):
        batches = self._batches()
        if self.num_workers == 0:
            for items in batches:
                yield self._batch(items)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.num_workers) as pool:
            ahead = self.num_workers * self.prefetch
            futures = [pool.submit(self._batch, b) for b in batches[:ahead]]
            for k in range(len(batches)):
                batch = futures[k].result()
                futures[k] = None  # drop the reference: memory stays ~ahead batches
                if k + ahead < len(batches):
                    futures.append(pool.submit(self._batch, batches[k + ahead]))
                yield batch

    def _batch(self, items):
        batch = self.dataset.get_batch(items)
        if not self.pin_memory:
            return batch
        if isinstance(batch, tuple):
            return tuple(b.pin_memory() for b in batch)
        return batch.pin_memory()


class BandNormalize(torch.nn.Module):
    """``(x - mean) / std`` per band on whatever device the batch is on (int16 in, float out)."""

    def __init__(self, stats: dict):
        super().__init__()
        mean = torch.tensor(stats["mean"], dtype=torch.float32)[None, :, None, None]
        std = torch.tensor(stats["std"], dtype=torch.float32).clamp_min(1e-6)[None, :, None, None]
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def load_reference_stats(folder: str | os.PathLike) -> dict:
    """SpectralEarth's published per-band statistics (``mu.npy``, ``sigma.npy``: float32 (202,),
    reflectance x 10000, the 202-band view) as a stats dict for :class:`ShardPatches`."""
    folder = Path(folder)
    mean = np.load(folder / "mu.npy").astype(np.float32)
    std = np.load(folder / "sigma.npy").astype(np.float32)
    if mean.shape != (202,) or std.shape != (202,):
        raise ValueError(f"{folder}: expected (202,) mu/sigma, got {mean.shape} and {std.shape}")
    return {"mean": mean.tolist(), "std": std.tolist(), "source": str(folder)}
