#!/usr/bin/env python3
"""Write a small fake tree of the nine SpectralEarth downstream datasets (torchgeo style).

Patch names are the first few lines of the official split lists
(``../shared/data/spectralearth_reference/splits/<dataset>/{train,val,test}.txt``), so the
loader is tested on the real naming. Images are int16 with the sensor's band count, one
random spectrum per class plus noise (so the task is learnable); labels
mix the dataset's kept codes with codes it ignores (0 and one foreign code), stored as
uint32 (EuroCrops' 10-digit HCAT codes exceed int32).

    python tests/data/downstream/make_fake.py SPLITS_DIR OUT_DIR [--per-split 3] [--size 8]

Writes ``OUT_DIR/<dataset>/{<sensor_dir>,<label_dir>}/<loc>/<scene>.tif`` and
``OUT_DIR/<dataset>/splits/{train,val,test}.txt`` (the lists, cut to ``--per-split`` lines).

``--datasets hyperview`` writes a HYPERVIEW stand-in in the reference datamodule's layout
instead (no split lists needed): ``OUT_DIR/hyperview/images/<sample_index>.npz`` (150-band
cubes under ``data``, fields of irregular size with a ``mask``) and
``OUT_DIR/hyperview/splits/{train,val,test}.csv`` (``--per-split`` fields each) whose
standardised P, K, Mg, pH shift the fields' spectra along fixed directions (a learnable
regression).
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from spectralearth.cards import PAPER_DATASETS
from spectralearth.cards.hyperview import BANDS as HYPERVIEW_BANDS
from spectralearth.cards.hyperview import TARGETS as HYPERVIEW_TARGETS
from spectralearth.downstream.datasets.base import SPLITS, get_card

FOREIGN_CODE = 999  # a code no dataset keeps


def write_dataset(name: str, splits_dir: Path, out: Path, per_split: int, size: int) -> dict:
    info = get_card(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    root = out / name
    # one random spectrum per class (the last one for ignored pixels): a separable task
    spectra = rng.uniform(500, 3000, (info.num_classes + 1, info.bands))
    names = {}
    for split in SPLITS:
        lines = (splits_dir / name / f"{split}.txt").read_text().split()[:per_split]
        names[split] = lines
        (root / "splits").mkdir(parents=True, exist_ok=True)
        (root / "splits" / f"{split}.txt").write_text("".join(f"{n}\n" for n in lines))
        for k, rel in enumerate(lines):
            profile = {
                "driver": "GTiff",
                "width": size,
                "height": size,
                "crs": "EPSG:32633",
                "transform": from_origin(300_000 + 1000 * k, 5_000_000, 30, 30),
            }
            codes = np.array([*info.codes, 0, FOREIGN_CODE], dtype=np.uint32)
            label = codes[rng.integers(0, len(codes), (size, size))]
            cls = info.encode(label)
            image = spectra[np.where(cls >= 0, cls, -1)].transpose(2, 0, 1)
            image = image + rng.normal(0, 20, (info.bands, size, size))
            for folder, data, dtype in (
                (info.sensor_dir, image.round().astype(np.int16), "int16"),
                (info.label_dir, label[None], "uint32"),
            ):
                path = root / folder / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                with rasterio.open(path, "w", count=data.shape[0], dtype=dtype, **profile) as dst:
                    dst.write(data)
    return names


def write_hyperview(out: Path, per_split: int, size: int) -> dict:
    """The HYPERVIEW stand-in (see the module doc); fields of ``size // 2 .. size`` px."""
    rng = np.random.default_rng(zlib.crc32(b"hyperview"))
    root = out / "hyperview"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    k = len(HYPERVIEW_TARGETS)
    base = rng.uniform(250, 450, HYPERVIEW_BANDS)  # ~ the reference's HYPERVIEW mu
    directions = rng.normal(0, 40, (k, HYPERVIEW_BANDS))
    names, index = {}, 0
    for split in SPLITS:
        rows = []
        for _ in range(per_split):
            targets = rng.normal(0, 1, k)
            h, w = rng.integers(max(size // 2, 2), size + 1, 2)
            spectrum = base + targets @ directions
            cube = spectrum[:, None, None] + rng.normal(0, 10, (HYPERVIEW_BANDS, h, w))
            mask = np.zeros(cube.shape, dtype=bool)
            mask[:, 0, 0] = True  # a corner outside the field, as masked arrays have
            np.savez(
                root / "images" / f"{index}.npz", data=cube.round().astype(np.int16), mask=mask
            )
            rows.append([index, *targets.round(6), "B"])
            index += 1
        header = ",".join(["sample_index", *HYPERVIEW_TARGETS, "company"])
        lines = [",".join(map(str, r)) for r in rows]
        (root / "splits" / f"{split}.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
        names[split] = [r[0] for r in rows]
    return names


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("splits_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--per-split", type=int, default=3)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--datasets", nargs="*", default=list(PAPER_DATASETS))
    args = ap.parse_args(argv)
    for name in args.datasets:
        if name == "hyperview":
            write_hyperview(args.out_dir, args.per_split, args.size)
        else:
            write_dataset(name, args.splits_dir, args.out_dir, args.per_split, args.size)


if __name__ == "__main__":
    main()
