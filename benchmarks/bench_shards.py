"""Training-read speed: memory-mapped int16 shards vs the release-layout GeoTIFFs.

Writes N random 202x128x128 patches both ways into a temp folder, then reads them in a
random order (as a shuffling DataLoader would) and prints patches/s and the ratio
shards / GeoTIFF, measured in the same run. Page cache is warm for both (second pass).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from spectralearth.patches.store import write_patch

N, BANDS, SIZE = 64, 202, 128


def main() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 10000, size=(N, BANDS, SIZE, SIZE), dtype=np.int16)
    wl = np.linspace(420, 2440, BANDS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(N):
            write_patch(
                tmp / f"p{i}.tif", data[i], "EPSG:32633", Affine(30, 0, 0, 0, -30, 0), wl, {}
            )
        np.save(tmp / "shard.npy", data)
        order = rng.permutation(N)

        def read_tifs():
            for i in order:
                with rasterio.open(tmp / f"p{i}.tif") as src:
                    src.read()

        def read_shard():
            arr = np.load(tmp / "shard.npy", mmap_mode="r")
            for i in order:
                np.asarray(arr[i]).copy()

        results = {}
        for name, fn in (("geotiff", read_tifs), ("shards", read_shard)):
            fn()  # warm the page cache
            t0 = time.perf_counter()
            for _ in range(3):
                fn()
            results[name] = 3 * N / (time.perf_counter() - t0)
    print(f"geotiff: {results['geotiff']:.0f} patches/s")
    print(f"shards:  {results['shards']:.0f} patches/s")
    print(f"ratio shards/geotiff: {results['shards'] / results['geotiff']:.2f}x")


if __name__ == "__main__":
    main()
