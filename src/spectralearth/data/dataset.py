"""Torch datasets over the training store: one date, or two dates, of each location.

The data come from a *patch source*: the checked single-copy store of a curated folder or of a
released SpectralEarth tree (:class:`~spectralearth.patches.reader.PatchStore`, via
:func:`open_training_source`), or legacy training shards
(:class:`~spectralearth.data.shards.ShardSource`). A source has ``index`` (one row per patch:
patch_id, location_id, scene_id, datetime, split), ``shape`` ([bands, P, P], int16) and
``read_into(row, out)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


def open_training_source(path: str | os.PathLike):
    """The patch source of ``path``: a curated folder or released tree (``index.parquet``),
    a legacy shards folder (``manifest.parquet``), or a curated folder's ``shards/`` path
    where the folder now holds the single-copy store (what older callers pass).

    A curated folder whose index predates the single-copy store trains from its legacy
    shards when it still has them (unchecked: they carry no checksums; migrate it with
    :func:`spectralearth.patches.migrate.migrate_store`).
    """
    from spectralearth.data.shards import MANIFEST, ShardSource
    from spectralearth.patches.reader import open_store
    from spectralearth.patches.store import INDEX_FILE, STORE_COLUMNS

    path = Path(path)
    if (path / INDEX_FILE).is_file():
        import pyarrow.parquet as pq

        current = set(STORE_COLUMNS) <= set(pq.read_schema(path / INDEX_FILE).names)
        if not current and (path / "shards" / MANIFEST).is_file():
            return ShardSource(path / "shards")
        return open_store(path)
    if (path / MANIFEST).is_file():
        return ShardSource(path)
    if path.name == "shards" and (path.parent / INDEX_FILE).is_file():
        return open_training_source(path.parent)
    raise FileNotFoundError(
        f"no training data at {path}: expected {path / INDEX_FILE} (a curated folder or an "
        f"indexed released tree) or a legacy shard manifest {path / MANIFEST}; curate it "
        "(`spectralearth curate`) or index a released tree (`spectralearth index-release`)"
    )


class PatchDataset(Dataset):
    """Patches of one split, normalised per band as ``(x - mean) / std``.

    ``data``: a path (:func:`open_training_source`) or a patch source.

    ``two_dates=False``: item i is patch i of the split, a float32 tensor [bands, P, P].

    ``per_location=True``: item i is location i of the split, one of its dates drawn at
    random each epoch (seeded by (seed, epoch, i)), so multi-date places are not
    over-represented.

    ``two_dates=True``: item i is location i of the split and returns a pair of tensors,
    two patches of that location taken on different dates (a random pair from a generator
    seeded by (seed, epoch, i)); a location seen on one date only gives its patch twice.
    Call :meth:`set_epoch` to draw new pairs each epoch. Dates are acquisition times; rows
    without one (a released tree whose files carry no time) count one date per scene.

    ``stats`` is the band-statistics dict ({"mean": [...], "std": [...]}, reflectance x
    10000); without it the raw values are returned as float32.
    """

    def __init__(
        self,
        data,
        split: str = "train",
        stats: dict | None = None,
        two_dates: bool = False,
        seed: int = 0,
        per_location: bool = False,
        normalize: bool = True,
    ) -> None:
        self.source = open_training_source(data) if isinstance(data, str | os.PathLike) else data
        self.split = split
        self.two_dates = two_dates
        self.per_location = per_location or two_dates
        # normalize=False yields raw int16 (half the bytes between processes); normalise on
        # the device with BandNormalize, as the training loop does
        self.normalize = normalize
        self.seed = int(seed)
        self.epoch = 0
        index = self.source.index
        rows = index[index["split"] == split].copy()
        rows["_source_row"] = np.flatnonzero((index["split"] == split).to_numpy())
        rows = rows.sort_values(["location_id", "datetime", "patch_id"], kind="stable")
        self.rows = rows.reset_index(drop=True)
        self._source_row = self.rows["_source_row"].to_numpy(np.int64)
        # Per location: the row numbers of its patches grouped by distinct date.
        self.locations: list[int] = []
        self._dates: list[list[np.ndarray]] = []
        if len(self.rows):
            date = (
                self.rows["datetime"]
                .astype(object)
                .where(self.rows["datetime"].notna(), "scene:" + self.rows["scene_id"].astype(str))
            )
            for loc, group in self.rows.groupby("location_id", sort=True):
                by_date = group.groupby(date.loc[group.index], sort=False).indices
                ordered = sorted(by_date.values(), key=lambda ix: tuple(group.index[ix]))
                self.locations.append(int(loc))
                self._dates.append([group.index.to_numpy()[i] for i in ordered])
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        if stats is not None:
            mean = np.asarray(stats["mean"], dtype=np.float32)
            std = np.asarray(stats["std"], dtype=np.float32)
            if mean.shape != std.shape or mean.ndim != 1:
                raise ValueError(f"band stats: mean {mean.shape} and std {std.shape} differ")
            if len(self.rows) and mean.shape[0] != self.n_bands:
                raise ValueError(
                    f"{self.source.root}: {self.n_bands} bands but band stats have {mean.shape[0]}"
                )
            self._mean = mean[:, None, None]
            self._std = np.maximum(std, 1e-6)[:, None, None]

    @property
    def n_patches(self) -> int:
        return len(self.rows)

    @property
    def n_locations(self) -> int:
        return len(self.locations)

    @property
    def n_bands(self) -> int:
        """Band count of the patches (0 for an empty split)."""
        return int(self.source.shape[0]) if len(self.rows) else 0

    @property
    def patch_size(self) -> int:
        return int(self.source.shape[-1]) if len(self.rows) else 0

    def n_dates(self, location_index: int) -> int:
        return len(self._dates[location_index])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_locations if self.per_location else self.n_patches

    def _raw(self, row: int, out: np.ndarray | None = None) -> np.ndarray:
        out = np.empty(self.source.shape, dtype=np.int16) if out is None else out
        self.source.read_into(int(self._source_row[row]), out)
        return out

    def patch(self, row: int) -> torch.Tensor:
        """Row ``row`` of the split as a normalised float32 tensor [bands, P, P]."""
        raw = self._raw(row)
        if not self.normalize:
            return torch.from_numpy(raw)
        x = raw.astype(np.float32)
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
        """Rows as one batch [len(rows), bands, P, P], each patch read once straight into the
        batch array (no per-patch tensors, no stack)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.source.shape), dtype=np.int16)
        for k, row in enumerate(rows):
            self._raw(int(row), out[k])
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


class PatchBatchLoader:
    """Batches read straight from the store, prefetched by a pool of threads.

    Why threads, not DataLoader processes: reading a batch is a file read out of the page
    cache into the batch array (the read releases the GIL), so sending the batch from a
    worker process to the trainer (shared-memory allocation and page faults for ~6.6 MB a
    patch) would cost more than reading it (see benchmarks/bench_loader.py). The same idea
    as FFCV's thread-based loader.

    Yields what ``PatchDataset.get_batch`` returns. Shuffled per epoch from ``(seed, epoch)``;
    ``rank``/``world_size`` give each DDP process a disjoint slice of the same permutation.
    """

    def __init__(
        self,
        dataset: PatchDataset,
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
    reflectance x 10000, the 202-band view) as a stats dict for :class:`PatchDataset`."""
    folder = Path(folder)
    mean = np.load(folder / "mu.npy").astype(np.float32)
    std = np.load(folder / "sigma.npy").astype(np.float32)
    if mean.shape != (202,) or std.shape != (202,):
        raise ValueError(f"{folder}: expected (202,) mu/sigma, got {mean.shape} and {std.shape}")
    return {"mean": mean.tolist(), "std": std.tolist(), "source": str(folder)}
