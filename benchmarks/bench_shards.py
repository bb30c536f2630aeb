"""Raw training-read speed of one patch, one thread: the store's pixel-block reads (the block
memory-mapped and kept, as the loader does; a new map per read; a ``pread``) vs a rasterio
open of the same GeoTIFF vs the shard-era ``.npy`` memory map.

Writes N random 202 x 128 x 128 patches as curation writes them (``write_patch``) and as one
``.npy`` shard, then reads them in a random order (as a shuffling loader would) into one
buffer, warm page cache (a first pass is not timed), and prints patches/s and the ratios,
measured in the same run. No loader, no threads: the cost of the read alone.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from spectralearth.patches.reader import read_block
from spectralearth.patches.store import pixel_block, write_patch

SHAPE = (202, 128, 128)

N, BANDS, SIZE, PASSES = 64, 202, 128, 3


def main() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 10000, size=(N, BANDS, SIZE, SIZE), dtype=np.int16)
    wl = np.linspace(420, 2440, BANDS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        offsets = []
        for i in range(N):
            path = tmp / f"p{i}.tif"
            write_patch(path, data[i], "EPSG:32633", Affine(30, 0, 0, 0, -30, 0), wl, {})
            offsets.append(pixel_block(path).offset)
        np.save(tmp / "shard.npy", data)
        order = rng.permutation(N)
        out = np.empty((BANDS, SIZE, SIZE), dtype=np.int16)

        def read_tifs():
            for i in order:
                with rasterio.open(tmp / f"p{i}.tif") as src:
                    out[...] = src.read()

        maps = {}

        def read_store():  # what PatchStore does: the block's map kept for the next read
            for i in order:
                block = maps.get(i)
                if block is None:
                    block = maps[i] = np.memmap(
                        tmp / f"p{i}.tif", dtype="<i2", mode="r", offset=offsets[i], shape=SHAPE
                    )
                out[...] = block

        def read_store_new_map():  # a store larger than the kept maps: a map per read
            for i in order:
                out[...] = np.memmap(
                    tmp / f"p{i}.tif", dtype="<i2", mode="r", offset=offsets[i], shape=SHAPE
                )

        def read_store_pread():
            for i in order:
                read_block(str(tmp / f"p{i}.tif"), offsets[i], out)

        def read_shard():
            arr = np.load(tmp / "shard.npy", mmap_mode="r")
            for i in order:
                out[...] = arr[i]

        rates = {}
        for name, fn in (
            ("geotiff", read_tifs),
            ("store", read_store),
            ("store, new map per read", read_store_new_map),
            ("store, pread", read_store_pread),
            ("shard", read_shard),
        ):
            fn()  # warm the page cache
            t0 = time.perf_counter()
            for _ in range(PASSES):
                fn()
            rates[name] = PASSES * N / (time.perf_counter() - t0)
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min)")
    for name, rate in rates.items():
        print(f"{name:24s} {rate:7.0f} patches/s")
    print(f"ratio store/geotiff: {rates['store'] / rates['geotiff']:.2f}x")
    print(f"ratio store/shard:   {rates['store'] / rates['shard']:.2f}x")


if __name__ == "__main__":
    main()
