"""P2: training-loader throughput on the one stored copy, side by side in one run with the two
loaders it replaces. Goals: >= 5x one rasterio open per patch, >= 0.8x the shard loader.

The same 128 random 202 x 128 x 128 int16 patches are written three ways:

- the store: release-layout GeoTIFFs as curation writes them (``write_patch``: one
  contiguous pixel block), indexed with ``index_release``; read by ``PatchBatchLoader``
  with 2 threads (what pretraining uses: each file's block memory-mapped at its offset and
  copied into the batch);
- the published loader's way: a DataLoader with 2 worker processes, one rasterio open and
  read per patch, over the same files;
- the shard-era loader: one ``.npy`` shard memory-mapped (``ShardSource``), read by the same
  thread loader (what pretraining used before).

Batches of 16, shuffled, int16 (``pretrain`` normalises on the device); the first (warm-up)
epoch is not timed, then 3 epochs each, in ABBA-style rotating order; best of 3 rounds
(the 2-core machine is shared: the best round is the least disturbed one).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import torch
from affine import Affine
from torch.utils.data import DataLoader, Dataset

from spectralearth.data.dataset import PatchBatchLoader, PatchDataset
from spectralearth.data.shards import ShardSource
from spectralearth.patches.release import index_release
from spectralearth.patches.store import write_patch

N, BANDS, SIZE, BATCH, WORKERS, EPOCHS, ROUNDS = 128, 202, 128, 16, 2, 3, 3


class GeoTiffPatches(Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with rasterio.open(self.paths[i]) as src:
            return torch.from_numpy(src.read())


def _rate(make_loader) -> float:
    loader = make_loader()
    for _ in loader:  # warm-up: workers start, page cache fills
        pass
    t0 = time.perf_counter()
    n = 0
    for epoch in range(EPOCHS):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch + 1)
        for batch in loader:
            n += batch.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    data = rng.integers(0, 10000, size=(N, BANDS, SIZE, SIZE), dtype=np.int16)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for i in range(N):
            paths.append(tmp / f"enmap/{i + 1:07d}/00001.tif")
            write_patch(
                paths[-1],
                data[i],
                "EPSG:32633",
                Affine(30, 0, 30 * SIZE * i, 0, -30, 0),
                np.linspace(420, 2440, BANDS),
                {},
            )
        index_release(tmp, val_frac=0.0, test_frac=0.0)
        (tmp / "shards").mkdir()
        np.save(tmp / "shards" / "scene.npy", data)
        pd.DataFrame(
            {
                "patch_id": [f"{i + 1:07d}/00001" for i in range(N)],
                "location_id": np.arange(1, N + 1),
                "scene_id": 1,
                "datetime": pd.Timestamp("2024-06-01", tz="UTC"),
                "split": "train",
                "shard": "scene.npy",
                "index": np.arange(N),
            }
        ).to_parquet(tmp / "shards" / "manifest.parquet", index=False)
        store = PatchDataset(tmp, normalize=False)
        shards = PatchDataset(ShardSource(tmp / "shards"), normalize=False)
        assert torch.equal(store.gather(np.arange(N)), shards.gather(np.arange(N)))
        loaders = {
            "store": lambda: PatchBatchLoader(store, BATCH, num_workers=WORKERS),
            "tiff": lambda: DataLoader(
                GeoTiffPatches(paths),
                batch_size=BATCH,
                shuffle=True,
                num_workers=WORKERS,
                persistent_workers=True,
            ),
            "shards": lambda: PatchBatchLoader(shards, BATCH, num_workers=WORKERS),
        }
        best = dict.fromkeys(loaders, 0.0)
        order = list(loaders)
        for round_ in range(ROUNDS):
            for name in order if round_ % 2 == 0 else order[::-1]:
                best[name] = max(best[name], _rate(loaders[name]))
    s, t, h = best["store"], best["tiff"], best["shards"]
    print(f"load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (1 min)")
    print(f"GeoTIFF per patch, rasterio, {WORKERS} processes: {t:.0f} patches/s")
    print(f"shard loader (.npy memory map), {WORKERS} threads: {h:.0f} patches/s")
    print(f"single-copy store (memory-mapped blocks), {WORKERS} threads: {s:.0f} patches/s")
    print(f"ratio store/geotiff: {s / t:.2f}x (goal >= 5x)")
    print(f"ratio store/shards:  {s / h:.2f}x (goal >= 0.8x)")


if __name__ == "__main__":
    main()
