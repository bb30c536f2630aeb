"""P2: training-loader throughput, patches/s into a batch tensor with 2 workers: the
memory-mapped shards vs one rasterio open per release GeoTIFF (the published loader's way,
2 DataLoader worker processes). Goal: >= 5x.

Shards are measured two ways: `ShardPatches` in a DataLoader with 2 worker processes (batched
`__getitems__`), and `ShardBatchLoader` with 2 threads (what pretraining uses): a shard batch
is a memory copy, cheaper than shipping it between processes.

128 random 202 x 128 x 128 int16 patches written both ways; batches of 16, shuffled; measured
with int16 batches (the training path: `pretrain` normalises on the device) and with float32
normalised in the workers; the first (warm-up) epoch is not timed, then 2 epochs each.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import torch
from affine import Affine
from torch.utils.data import DataLoader, Dataset

from spectralearth.data.shards import ShardBatchLoader, ShardPatches
from spectralearth.patches.store import write_patch, write_scene_shard

N, BANDS, SIZE, BATCH, WORKERS = 128, 202, 128, 16, 2


class GeoTiffPatches(Dataset):
    def __init__(self, paths, mean, std, normalize=True):
        self.paths, self.mean, self.std = paths, mean[:, None, None], std[:, None, None]
        self.normalize = normalize

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with rasterio.open(self.paths[i]) as src:
            x = src.read()
        if not self.normalize:
            return torch.from_numpy(x)
        return torch.from_numpy((x.astype(np.float32) - self.mean) / self.std)


def _rate(dataset, threads: bool = False) -> float:
    if threads:
        loader = ShardBatchLoader(dataset, BATCH, num_workers=WORKERS)
    else:
        loader = DataLoader(
            dataset, batch_size=BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True
        )
    for _ in loader:  # warm-up: workers start, page cache fills
        pass
    t0 = time.perf_counter()
    n = 0
    for _ in range(2):
        for batch in loader:
            n += batch.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 10000, size=(N, BANDS, SIZE, SIZE), dtype=np.int16)
    mean = data.mean(axis=(0, 2, 3)).astype(np.float32)
    std = data.std(axis=(0, 2, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for i in range(N):
            paths.append(tmp / f"enmap/{i:07d}/00001.tif")
            write_patch(
                paths[-1],
                data[i],
                "EPSG:32633",
                Affine(30, 0, 0, 0, -30, 0),
                np.linspace(420, 2440, BANDS),
                {},
            )
        write_scene_shard(tmp / "shards" / "scene.npy", list(data))
        pd.DataFrame(
            {
                "patch_id": [f"{i:07d}/00001" for i in range(N)],
                "location_id": np.arange(N),
                "scene_id": 1,
                "datetime": pd.Timestamp("2024-06-01", tz="UTC"),
                "split": "train",
                "shard": "scene.npy",
                "index": np.arange(N),
            }
        ).to_parquet(tmp / "shards" / "manifest.parquet", index=False)
        stats = {"mean": mean.tolist(), "std": std.tolist()}
        rates = {}
        for norm in (False, True):
            shards = ShardPatches(tmp / "shards", stats=stats, normalize=norm)
            rates["shards", norm] = _rate(shards)
            rates["threads", norm] = _rate(shards, threads=True)
            rates["tiff", norm] = _rate(GeoTiffPatches(paths, mean, std, normalize=norm))
    for norm, label in (
        (False, "int16 batches (normalised on the device: the training path)"),
        (True, "float32 batches normalised in the workers"),
    ):
        s, h, t = rates["shards", norm], rates["threads", norm], rates["tiff", norm]
        print(f"{label}:")
        print(f"  GeoTIFF per patch, {WORKERS} processes: {t:.0f} patches/s (batch {BATCH})")
        print(f"  ShardPatches, {WORKERS} processes:     {s:.0f} patches/s  ({s / t:.2f}x)")
        print(f"  ShardBatchLoader, {WORKERS} threads:   {h:.0f} patches/s  ({h / t:.2f}x)")
        print(f"  ratio shards/geotiff: {h / t:.2f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
