"""HYPERVIEW soil-parameter regression (``hyperview``); the card is
:mod:`spectralearth.cards.hyperview`.

Layout (the SpectralEarth reference datamodule's)::

    <root>/images/<sample_index>.npz            cube under "data", [150, H, W]
    <root>/splits/{train,val,test}.csv          sample_index, P, K, Mg, pH (other columns ignored)

Items: ``(image float32 [150, 128, 128], target float32 [4])``; the image is resized with
bicubic interpolation (corners aligned) to :attr:`patch_size` and normalised per band with
``stats``. Images are read once and kept in memory at their own size, as the reference
dataset does (the fields are small), and resized when an item is taken.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from spectralearth.cards.hyperview import HYPERVIEW, TARGETS
from spectralearth.downstream.datasets.base import SPLITS, MissingPatchesError, band_stats

CARD = HYPERVIEW
NAME = CARD.name
IMAGES = "images"
SPLIT_DIR = "splits"
INDEX_COLUMN = "sample_index"


def is_hyperview_layout(root: str | os.PathLike) -> bool:
    """True for a folder laid out as HYPERVIEW (images/*.npz, splits/train.csv)."""
    root = Path(root)
    return (root / IMAGES).is_dir() and (root / SPLIT_DIR / "train.csv").is_file()


def resize(image: np.ndarray, size: int) -> torch.Tensor:
    """``[C, H, W]`` -> float32 ``[C, size, size]``, bicubic with aligned corners (the
    reference's ``resize_hyperspectral_tensor``; an image already that size is unchanged)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    if tuple(x.shape[-2:]) == (size, size):
        return x[0]
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True)[0]


class HyperviewDataset(Dataset):
    """One split of HYPERVIEW. ``stats`` (``{"mean", "std"}``, 150 values) normalises the
    bands; ``None`` computes them from the train split's resized images. ``split_dir``
    holds the split CSVs (default ``<root>/splits``)."""

    name = NAME
    task = CARD.task
    sensor = CARD.sensor
    bands = CARD.bands
    classes = list(TARGETS)
    target_names = TARGETS
    # the naive baseline of the challenge's score: the (standardised) targets' mean, 0
    target_baseline = (0.0,) * len(TARGETS)

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        stats: Mapping[str, Any] | None = None,
        split_dir: str | os.PathLike | None = None,
        patch_size: int = CARD.patch_size or 128,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; have {SPLITS}")
        self.root = Path(root)
        self.split = split
        self.split_dir = Path(split_dir) if split_dir else self.root / SPLIT_DIR
        self.patch_size = int(patch_size)
        self.files, self.targets = self._read_split(split)
        self._images = [self._read_image(f) for f in self.files]
        if stats is None:  # over the fields' own pixels (up to 256 train images)
            files = self.files if split == "train" else self._read_split("train")[0]
            train = self._images if split == "train" else map(self._read_image, files[:256])
            stats = band_stats(list(train)[:256])
        self.stats = {"mean": list(stats["mean"]), "std": list(stats["std"])}
        if len(self.stats["mean"]) != self.bands:
            raise ValueError(
                f"band statistics have {len(self.stats['mean'])} bands, {NAME} has {self.bands}"
            )
        self.mean = torch.tensor(self.stats["mean"], dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(self.stats["std"], dtype=torch.float32)[:, None, None]

    @property
    def num_classes(self) -> int:
        """The number of regression outputs (P, K, Mg, pH)."""
        return len(TARGETS)

    def _read_split(self, split: str) -> tuple[list[str], np.ndarray]:
        csv = self.split_dir / f"{split}.csv"
        if not csv.is_file():
            raise FileNotFoundError(f"{csv}: no such split file ({NAME} {split!r})")
        table = pd.read_csv(csv)
        missing_cols = [c for c in (INDEX_COLUMN, *TARGETS) if c not in table.columns]
        if missing_cols:
            raise ValueError(f"{csv}: columns {missing_cols} missing (has {list(table.columns)})")
        values = table[list(TARGETS)].to_numpy(dtype=np.float32)
        if not np.isfinite(values).all():
            bad = table.loc[~np.isfinite(values).all(axis=1), INDEX_COLUMN].tolist()
            raise ValueError(f"{csv}: targets missing or not finite for sample_index {bad[:10]}")
        files = [f"{IMAGES}/{int(i)}.npz" for i in table[INDEX_COLUMN]]
        missing = [f for f in files if not (self.root / f).is_file()]
        if missing:
            raise MissingPatchesError(csv, self.root, missing)
        return files, values

    def _read_image(self, name: str) -> np.ndarray:
        path = self.root / name
        try:
            with np.load(path, allow_pickle=False) as npz:
                cube = npz["data"]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a HYPERVIEW image (.npz with 'data'): {exc}") from exc
        if cube.ndim != 3 or cube.shape[0] != self.bands:
            raise ValueError(f"{path}: shape {cube.shape}, {NAME} images are [{self.bands}, H, W]")
        return cube

    def read_labels(self, i: int) -> np.ndarray:
        return self.targets[i]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = (resize(self._images[i], self.patch_size) - self.mean) / self.std
        return image, torch.from_numpy(self.targets[i].copy())
