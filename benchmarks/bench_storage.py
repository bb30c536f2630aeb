"""P7: bytes on disk of a curated folder / raw int16 bytes of its patches. Goal: <= 1.05.

One synthetic product of 1200 x 1200 px (224 bands) curated with every filter off, so all 64
windows of 128 px become patches (202 bands each); then the folder's whole footprint (every
file: patches, index, fragments, reports, registry) against 64 x 202 x 128 x 128 x 2 bytes.
Both the allocated size (``st_blocks``, what ``du`` shows) and the apparent size are given.
Before the single-copy store, curation also wrote every patch into a ``.npy`` shard (~2.0).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from spectralearth.config import filters_off, load_settings
from spectralearth.patches.curate import curate_scene
from spectralearth.patches.store import build_index
from spectralearth.synth import write_archive

SIZE = 1200
OFF = filters_off()


def main() -> None:
    settings = load_settings(overrides={"curate": OFF}).curate
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        product = write_archive(tmp / "archive", tmp / "labels", scenes=1, size=SIZE, seed=1)[0]
        out = tmp / "patches"
        res = curate_scene(product, out, settings)
        build_index(out, settings.val_frac, settings.test_frac)
        files = [p for p in out.rglob("*") if p.is_file()]
        allocated = sum(p.stat().st_blocks * 512 for p in files)
        apparent = sum(p.stat().st_size for p in files)
        tifs = sum(p.stat().st_size for p in files if p.suffix == ".tif")
    raw = res.kept * 202 * settings.patch_size**2 * 2
    print(
        f"{res.kept} patches of 202 x {settings.patch_size} x {settings.patch_size} int16: {raw} raw bytes"
    )
    print(f"curated folder: {allocated} bytes allocated, {apparent} apparent ({len(files)} files)")
    print(f"  of which GeoTIFFs: {tifs} bytes ({tifs / raw:.4f}x raw: header and tags)")
    print(f"ratio allocated/raw: {allocated / raw:.4f}x (goal <= 1.05)")
    print(f"ratio apparent/raw:  {apparent / raw:.4f}x")


if __name__ == "__main__":
    main()
