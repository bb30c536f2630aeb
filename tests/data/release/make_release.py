#!/usr/bin/env python3
"""Write a small fake released SpectralEarth pretraining tree (torchgeo style).

The official layout, ``OUT/enmap/<location:07d>/<scene:05d>.tif`` (int16, 202 bands, square
patches, UTM, nodata -32768), with the kinds of file a downloaded tree can hold:

- most files uncompressed and band-sequential, as this project writes them (the fast path);
- one DEFLATE-compressed and one pixel-interleaved file (rasterio's defaults: the slow path,
  same pixels);
- some locations with two dates (a ``datetime`` tag on some files, none on others);
- with ``--corrupt``, one file that is not a TIFF at all (cut after its first bytes).

    python tests/data/release/make_release.py OUT [--locations 6] [--size 16] [--corrupt]

Prints nothing; ``main`` returns {relative path: int16 pixels} of the readable files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

BANDS = 202
COMPRESSED = "enmap/0000002/00003.tif"
PIXEL_INTERLEAVED = "enmap/0000003/00004.tif"
CORRUPT = "enmap/0000099/00099.tif"  # a location of its own


def _write(path: Path, data: np.ndarray, origin: tuple[float, float], **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bands, h, w = data.shape
    profile = dict(
        driver="GTiff",
        dtype="int16",
        count=bands,
        height=h,
        width=w,
        crs="EPSG:32633",
        transform=from_origin(*origin, 30.0, 30.0),
        nodata=-32768,
        **options,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i in range(1, bands + 1):
            dst.update_tags(i, wavelength=f"{400 + 10 * i:.3f}")


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--locations", type=int, default=6)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--corrupt", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    written: dict[str, np.ndarray] = {}
    scene = 0
    for loc in range(1, args.locations + 1):
        origin = (366000.0 + 30.0 * args.size * loc, 5810000.0)
        for date in range(2 if loc % 2 == 0 else 1):  # even locations: two dates
            scene += 1
            rel = f"enmap/{loc:07d}/{scene:05d}.tif"
            data = rng.integers(0, 10000, (BANDS, args.size, args.size)).astype(np.int16)
            if rel == COMPRESSED:
                options = dict(compress="deflate", interleave="band")
            elif rel == PIXEL_INTERLEAVED:
                options = dict(interleave="pixel")
            else:
                options = dict(interleave="band", tiled=False, blockysize=args.size)
            _write(args.out / rel, data, origin, **options)
            if loc % 2 == 0:  # dated files: the two dates of a location are told apart
                with rasterio.open(args.out / rel, "r+") as dst:
                    dst.update_tags(datetime=f"2023-0{date + 4}-01T10:00:00+00:00")
            written[rel] = data
    if args.corrupt:
        path = args.out / CORRUPT
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"II*\x00" + b"\x00" * 60)  # a TIFF header, then nothing usable
    return written


if __name__ == "__main__":
    main()
