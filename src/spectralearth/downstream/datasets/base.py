"""The downstream dataset registry and the loader for SpectralEarth's released layout.

Every dataset is described by a card (:mod:`spectralearth.cards`, plain data, no torch);
this module reads the released layout those cards name::

    <root>/<sensor_dir>/<location:07d>/<scene:05d>.tif     image patch
    <root>/<label_dir>/<location:07d>/<scene:05d>.tif      label patch (source codes)
    <root>/splits/{train,val,test}.txt                     one ``<loc>/<scene>.tif`` a line

(``../shared/data/spectralearth_reference/splits/<dataset>/`` holds the official split
lists; :class:`ReleasedDataset` takes them through ``split_dir``.) Label rasters hold the
label source's own codes (CDL 1, 2, ..., EuroCrops HCAT 3301090205, ...); the codes a
dataset keeps become classes ``0..K-1`` in the order of :attr:`DatasetCard.codes`, every
other code becomes the ignore index (-1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from spectralearth.cards import (  # noqa: F401  (re-exported for the loaders)
    IGNORE_INDEX,
    MULTILABEL,
    REGRESSION,
    SEGMENTATION,
    SENSOR_BANDS,
    DatasetCard,
    encode_codes,
    get_card,
)

SPLITS = ("train", "val", "test")


class MissingPatchesError(FileNotFoundError):
    """A split file names patches that are not on disk (``missing`` lists them)."""

    def __init__(self, split_file: Path, root: Path, missing: list[str]):
        self.missing = missing
        shown = "\n  ".join(missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        super().__init__(
            f"{split_file} names {len(missing)} patch file(s) missing under {root}:\n  {shown}{more}"
        )


def read_split(split_file: str | os.PathLike) -> list[str]:
    """Lines of a split file (``<location:07d>/<scene:05d>.tif``), blank lines dropped."""
    split_file = Path(split_file)
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file}: no such split file")
    return [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]


def band_stats(images: list[np.ndarray] | np.ndarray) -> dict[str, list[float]]:
    """Per-band mean and std (float64) over images ``[C, H, W]``."""
    n = 0
    s = s2 = None
    for img in images:
        x = np.asarray(img, dtype=np.float64).reshape(img.shape[0], -1)
        s = x.sum(1) if s is None else s + x.sum(1)
        s2 = (x**2).sum(1) if s2 is None else s2 + (x**2).sum(1)
        n += x.shape[1]
    if not n:
        raise ValueError("no pixels to compute band statistics from")
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist()}


class ReleasedDataset(Dataset):
    """A registered dataset in the released layout (see module doc).

    ``split_dir`` holds ``{train,val,test}.txt`` (default ``<root>/splits``; pass
    ``../shared/data/spectralearth_reference/splits/<name>`` for the official lists). Every
    patch a split names must exist under both the sensor and the label folder, otherwise
    :class:`MissingPatchesError` lists the missing ones. ``stats`` (``{"mean", "std"}``,
    one value per band) normalises images; ``None`` computes them from the train split.

    Items: ``(image float32 [C, H, W], target)``: ``target`` is int64 ``[H, W]`` class
    indices (``-1`` = ignore) for segmentation, float32 ``[K]`` multi-hot for multi-label
    (the classes of the patch's labelled pixels).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        info: DatasetCard | str,
        split: str,
        stats: Mapping[str, Any] | None = None,
        split_dir: str | os.PathLike | None = None,
        max_stats_files: int = 256,
    ):
        self.root = Path(root)
        self.info = get_card(info) if isinstance(info, str) else info
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; have {SPLITS}")
        self.split = split
        self.split_dir = Path(split_dir) if split_dir else self.root / "splits"
        self.files = self._checked(split)
        self.classes = list(self.info.class_names)
        self.task = self.info.task
        self.bands = self.info.bands
        if stats is None:
            train = self.files if split == "train" else self._checked("train")
            stats = band_stats([self._read_image(f) for f in train[:max_stats_files]])
        self.stats = {"mean": list(stats["mean"]), "std": list(stats["std"])}
        self.mean = torch.tensor(self.stats["mean"], dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(self.stats["std"], dtype=torch.float32)[:, None, None]
        if len(self.mean) != self.bands:
            raise ValueError(
                f"band statistics have {len(self.mean)} bands, {self.info.name} has {self.bands}"
            )

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def sensor(self) -> str:
        return self.info.sensor

    def _checked(self, split: str) -> list[str]:
        split_file = self.split_dir / f"{split}.txt"
        files = read_split(split_file)
        missing = [
            f"{d}/{f}"
            for f in files
            for d in (self.info.sensor_dir, self.info.label_dir)
            if not (self.root / d / f).is_file()
        ]
        if missing:
            raise MissingPatchesError(split_file, self.root, missing)
        return files

    def _read_image(self, name: str) -> np.ndarray:
        path = self.root / self.info.sensor_dir / name
        with rasterio.open(path) as src:
            image = src.read()
        if image.shape[0] != self.bands:
            raise ValueError(
                f"{path}: {image.shape[0]} bands, {self.info.name} ({self.info.sensor}) "
                f"expects {self.bands}"
            )
        return image

    def read_labels(self, i: int) -> np.ndarray:
        """Class indices ``[H, W]`` (int64, -1 = ignore) of patch ``i``."""
        with rasterio.open(self.root / self.info.label_dir / self.files[i]) as src:
            return self.info.encode(src.read(1))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self._read_image(self.files[i]).astype(np.float32))
        labels = self.read_labels(i)
        if labels.shape != tuple(image.shape[1:]):
            raise ValueError(
                f"{self.files[i]}: image {tuple(image.shape[1:])} vs label {labels.shape}"
            )
        image = (image - self.mean) / self.std
        if self.task == MULTILABEL:
            target = torch.zeros(self.num_classes, dtype=torch.float32)
            present = np.unique(labels[labels >= 0])
            target[torch.from_numpy(present)] = 1.0
            return image, target
        return image, torch.from_numpy(labels)
