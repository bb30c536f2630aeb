"""Legacy training shards, and the names the training data had before the single-copy store.

Curation used to write every patch twice: the release GeoTIFF and one ``<patches>/shards/
<scene>.npy`` per scene (int16 [n, bands, P, P]) with ``shards/manifest.parquet`` (patch_id,
location_id, scene_id, datetime, split, shard, index). It no longer does (the GeoTIFFs are
the training store, :mod:`spectralearth.patches.reader`). Folders curated before still train:
:class:`ShardSource` reads their shards, checking each shard's header against its file size
and the manifest's rows against the shard's length (so a truncated shard names its file), but
they carry no checksums; :func:`spectralearth.patches.migrate.migrate_store` turns such a
folder into a checked single-copy store and removes the shards.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from spectralearth.data.dataset import (
    BandNormalize,
    PatchBatchLoader,
    PatchDataset,
    load_reference_stats,
)

MANIFEST = "manifest.parquet"
MANIFEST_COLUMNS = ("patch_id", "location_id", "scene_id", "datetime", "split", "shard", "index")

# The names of the training data before the single-copy store
ShardPatches = PatchDataset
ShardBatchLoader = PatchBatchLoader

__all__ = [
    "MANIFEST",
    "BandNormalize",
    "ShardBatchLoader",
    "ShardPatches",
    "ShardSource",
    "load_reference_stats",
    "read_manifest",
]


def read_manifest(shards_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(shards_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"shard manifest not found: {path}")
    manifest = pd.read_parquet(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return manifest


class ShardSource:
    """A legacy shards folder as a patch source (see :mod:`spectralearth.data.dataset`)."""

    def __init__(self, shards_dir: str | os.PathLike):
        from spectralearth.patches.reader import StoreIntegrityError

        self.root = Path(shards_dir)
        self.index = read_manifest(self.root).reset_index(drop=True)
        self._shard = self.index["shard"].astype(str).to_numpy()
        self._row = self.index["index"].astype(np.int64).to_numpy()
        self._arrays: dict[str, np.ndarray] = {}
        shapes = set()
        for shard, rows in self.index.groupby("shard")["index"]:
            arr = self._array(str(shard))
            if arr.ndim != 4:
                raise ValueError(f"{self.root / shard}: expected [n, bands, P, P], got {arr.shape}")
            if int(rows.max()) >= arr.shape[0]:
                raise StoreIntegrityError(
                    f"{self.root / shard}: the manifest points at row {int(rows.max())}, the "
                    f"shard holds {arr.shape[0]}: rebuild the folder's shards or migrate it"
                )
            shapes.add(arr.shape[1:])
        if len(shapes) > 1:
            raise ValueError(f"{self.root}: shards of several patch shapes {sorted(shapes)}")
        self.shape = shapes.pop() if shapes else (0, 0, 0)

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}  # memory maps are reopened in each process
        return state

    def _array(self, shard: str) -> np.ndarray:
        from spectralearth.patches.reader import StoreIntegrityError

        arr = self._arrays.get(shard)
        if arr is None:
            path = self.root / shard
            try:
                arr = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise FileNotFoundError(f"shard {path} (named in {MANIFEST}) is missing") from None
            except ValueError as exc:  # "mmap length is greater than file size"
                raise StoreIntegrityError(
                    f"{path}: shorter ({path.stat().st_size} bytes) than its header says "
                    f"({exc}): the shard is truncated; curate its scene again"
                ) from exc
            self._arrays[shard] = arr
        return arr

    def read_into(self, row: int, out: np.ndarray) -> None:
        out[...] = self._array(self._shard[row])[self._row[row]]

    def read(self, row: int) -> np.ndarray:
        return np.array(self._array(self._shard[row])[self._row[row]])
