"""Real land-cover segmentation on EnMAP tiles over Potsdam (``enmap_potsdam``).

Facts (torchgeo-style dataset card):

* **Images:** 18 tiles of 32 x 32 px cut from one real EnMAP L2A scene over Potsdam,
  Germany (2022-07-24, DLR processor v1.3.2), 30 m, UTM 33N, 224 bands, float32 with a
  GDAL scale of 1e-4 (reflectance), nodata -32768, bands in detector order. The tiles are read
  with the generic image reader (:func:`spectralearth.enmap.generic.open_generic`: int16
  reflectance x 10000) and the 202-band SpectralEarth view is chosen **by wavelength**
  (:func:`spectralearth.bands.select_view`); the empty bands at ~1331-1391 nm fall in the
  removed water-vapour range.
* **Labels:** ``labels/<same name>.tif``, 0 = unlabelled (ignored), 1-6 = six land-cover
  classes -> ``0..5``. The tiles carry no legend; the names below follow the EnMAP-Box
  example data's level-3 nomenclature (roof, pavement, low vegetation, tree, soil, water) in
  that order, which agrees with ``landcover_potsdam_point.gpkg`` where the points fall on
  labelled pixels (class 5 under soil points, 4 under tree points, 1 under impervious ones).
  Treat the names as inferred, the ids as exact.
* **Splits:** the source's own ``train_files.csv`` / ``validation_files.csv`` /
  ``test_files.csv`` (14 / 2 / 2 tiles; ``image,mask`` columns). Train and validation are
  for training and model selection; the test tiles are for final numbers only.
* **Layout** (the folder as shipped; ``--dataset PATH`` accepts it as it is)::

      <root>/images/enmap_potsdam_tile_<row>_<col>.tif
      <root>/labels/enmap_potsdam_tile_<row>_<col>.tif
      <root>/{train,validation,test}_files.csv

Source: EnMAP-Box example data (GPL-3.0; imagery (c) DLR). Do not republish the imagery.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import torch
from torch.utils.data import Dataset

from spectralearth.cards.potsdam import ENMAP_POTSDAM
from spectralearth.downstream.datasets.base import (
    IGNORE_INDEX,
    SEGMENTATION,
    SPLITS,
    MissingPatchesError,
    band_stats,
)

CARD = ENMAP_POTSDAM
NAME = CARD.name
SENSOR = CARD.sensor
BANDS = CARD.bands
CLASS_NAMES = CARD.class_names
SPLIT_FILES = {"train": "train_files.csv", "val": "validation_files.csv", "test": "test_files.csv"}
NODATA = -32768


def is_potsdam_layout(root: str | os.PathLike) -> bool:
    """True for a folder laid out like the Potsdam task (images/, labels/, *_files.csv)."""
    root = Path(root)
    return (
        (root / "images").is_dir()
        and (root / "labels").is_dir()
        and all((root / f).is_file() for f in SPLIT_FILES.values())
    )


def read_tile(path: str | os.PathLike) -> np.ndarray:
    """The 202-band view of one tile as int16 reflectance x 10000 ``[202, H, W]``."""
    from spectralearth.bands import select_view
    from spectralearth.enmap.generic import open_generic

    scene = open_generic(path)
    idx = select_view(scene.meta.wavelengths)
    image = scene.read(bands=idx)
    if (image == NODATA).any():
        bad = np.flatnonzero((image == NODATA).any(axis=(1, 2)))
        wl = scene.meta.wavelengths[idx[bad]]
        raise ValueError(
            f"{path}: nodata in {len(bad)} of the 202 view bands (e.g. "
            f"{', '.join(f'{w:.0f}' for w in wl[:5])} nm)"
        )
    return image


class PotsdamDataset(Dataset):
    """The Potsdam tiles of one split, loaded into memory (18 small tiles in all).

    ``stats`` normalises the 202 bands; ``None`` computes them from the train tiles.
    Items: ``(image float32 [202, 32, 32], mask int64 [32, 32])`` with -1 = unlabelled.
    """

    name = NAME
    task = SEGMENTATION
    sensor = SENSOR
    bands = BANDS
    classes = list(CLASS_NAMES)

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        stats: Mapping[str, Any] | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; have {SPLITS}")
        self.root = Path(root)
        if not is_potsdam_layout(self.root):
            raise FileNotFoundError(
                f"{self.root}: not the Potsdam layout (images/, labels/, "
                f"{', '.join(SPLIT_FILES.values())})"
            )
        self.split = split
        self.pairs = self._pairs(split)
        self.files = [img for img, _ in self.pairs]
        self._images = [read_tile(self.root / img) for img, _ in self.pairs]
        self._masks = []
        for _, lab in self.pairs:
            with rasterio.open(self.root / lab) as src:
                raw = src.read(1)
            ids = np.rint(np.nan_to_num(raw, nan=0)).astype(np.int64)
            self._masks.append(np.where((ids >= 1) & (ids <= 6), ids - 1, IGNORE_INDEX))
        if stats is None:
            train = (
                self._images
                if split == "train"
                else [read_tile(self.root / i) for i, _ in self._pairs("train")]
            )
            stats = band_stats(train)
        self.stats = {"mean": list(stats["mean"]), "std": list(stats["std"])}
        self.mean = torch.tensor(self.stats["mean"], dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(self.stats["std"], dtype=torch.float32)[:, None, None]

    def _pairs(self, split: str) -> list[tuple[str, str]]:
        csv = self.root / SPLIT_FILES[split]
        table = pd.read_csv(csv)
        if not {"image", "mask"} <= set(table.columns):
            raise ValueError(f"{csv}: needs columns image,mask; has {list(table.columns)}")
        pairs = list(zip(table["image"], table["mask"], strict=True))
        missing = [p for pair in pairs for p in pair if not (self.root / p).is_file()]
        if missing:
            raise MissingPatchesError(csv, self.root, missing)
        return pairs

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)

    def read_labels(self, i: int) -> np.ndarray:
        return self._masks[i]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self._images[i].astype(np.float32))
        return (image - self.mean) / self.std, torch.from_numpy(self._masks[i])
