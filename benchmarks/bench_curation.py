"""P1: curating one full 1200 x 1200 x 224 int16 scene vs reading that scene once with
rasterio (the floor). Goal: <= 1.3x.

Curation reads the scene (202 of 224 bands) and its QL masks, applies the filters and writes
the release GeoTIFFs (the one stored copy, with each patch's CRC-32) and the scene's index
fragment. Filters are off here,
so every window is written (the most work a scene can cost). The scene is
one synthetic product of 1200 px (written once, ~40 s, not timed). Warm cache, ROUNDS rounds
in ABBA order; reported: best curate / best read, and the median of each round's ratio (the
read and the curation side by side, so a slow spell of the shared host slows both).
"""

from __future__ import annotations

import os

os.environ.setdefault("GDAL_CACHEMAX", "64")  # same setting as bench_reader.py, for both

import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import rasterio  # noqa: E402

from spectralearth.config import filters_off, load_settings  # noqa: E402
from spectralearth.patches.curate import curate_scene  # noqa: E402
from spectralearth.synth import write_archive  # noqa: E402

SIZE = 1200
ROUNDS = 5


def main() -> None:
    # filters off: every window is kept and written, the most work curation can have
    settings = load_settings(overrides={"curate": filters_off()}).curate
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        product = write_archive(tmp / "archive", tmp / "labels", scenes=1, size=SIZE, seed=1)[0]
        image = next(product.glob("*-SPECTRAL_IMAGE.TIF"))

        def plain():
            with rasterio.open(image) as src:
                src.read()

        kept = {}

        out = tmp / "patches"

        def curate():
            res = curate_scene(product, out, settings)
            kept.update(windows=res.windows, kept=res.kept)

        times: dict[str, list[float]] = {"rasterio": [], "curate": []}
        for i in range(ROUNDS):
            for name, fn in (("rasterio", plain), ("curate", curate))[:: 1 if i % 2 == 0 else -1]:
                # each curation into an empty folder; deleting the last one's 420 MB is not
                # curation (it cost 0.14 s, inside the timing until session 5)
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    best = {name: min(t) for name, t in times.items()}
    paired = sorted(c / r for c, r in zip(times["curate"], times["rasterio"], strict=True))
    print(f"rasterio full read: {best['rasterio']:.2f} s ({SIZE}x{SIZE}x224 int16, deflate tiles)")
    print(
        f"curate_scene:       {best['curate']:.2f} s ({kept['kept']} of {kept['windows']} windows kept)"
    )
    print(f"ratio curate/read: {best['curate'] / best['rasterio']:.2f}x (goal <= 1.3x)")
    print(
        f"per-round ratios: {', '.join(f'{r:.2f}' for r in paired)} "
        f"(median {paired[len(paired) // 2]:.2f}x)"
    )
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
