"""Per-band statistics of a store's training split, tied to the index version they came from.

``compute_band_stats(root, out)`` reads the patches through the checked store
(:func:`~spectralearth.patches.reader.open_store`), so statistics are never computed from
files that no longer match the index, and records the ``index_version`` they came from.
:func:`check_stats` is what readers of statistics call: it raises, naming the command that
recomputes them, when they were computed from another version of the index (or before
versions existed). A curated folder's statistics live at ``CuratedLayout(root).stats``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from spectralearth.io import atomic_path
from spectralearth.patches.store import index_version


class StaleStatsError(RuntimeError):
    """Band statistics computed from another version of the patch index."""


def recompute_command(root: str | os.PathLike) -> str:
    return f"spectralearth stats --patches {root}"


def compute_band_stats(
    patches_root: str | os.PathLike, out: str | os.PathLike | None = None, split: str = "train"
) -> dict:
    """Per-band mean and std (reflectance x 10000) over the pixels of one split (all patches
    when the split is empty, said in ``split``: "all"); written to ``out`` (atomic; default
    ``CuratedLayout(patches_root).stats``, ``<root>/band_stats.json``)."""
    from spectralearth.layout import CuratedLayout
    from spectralearth.patches.reader import open_store

    root = Path(patches_root)
    out = Path(out) if out is not None else CuratedLayout(root).stats
    store = open_store(root)
    rows = np.flatnonzero((store.index["split"] == split).to_numpy())
    chosen = split
    if not len(rows):
        rows, chosen = np.arange(len(store)), "all"  # tiny archives may have no train location
    if not len(rows):
        raise ValueError(f"no patches in {root / 'index.parquet'}: cannot compute band statistics")
    bands = store.shape[0]
    total = np.zeros(bands, dtype=np.float64)
    total_sq = np.zeros(bands, dtype=np.float64)
    buf = np.empty(store.shape, dtype=np.int16)
    for row in rows:
        store.read_into(int(row), buf)
        x = buf.reshape(bands, -1).astype(np.float64)
        total += x.sum(axis=1)
        total_sq += np.einsum("ij,ij->i", x, x)
    n = len(rows) * store.shape[1] * store.shape[2]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 1e-12))
    stats = {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "wavelengths": _wavelengths(root / store.index["path"].iat[int(rows[0])]),
        "n_patches": int(len(rows)),
        "n_pixels": int(n),
        "split": chosen,
        "index_version": store.version,
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(stats))
    return stats


def check_stats(root: str | os.PathLike, stats: dict | str | os.PathLike) -> None:
    """Raise :class:`StaleStatsError` unless ``stats`` (a dict or a JSON file) were computed
    from the current index of ``root``; the message names the command that recomputes them."""
    where = ""
    if not isinstance(stats, dict):
        where = f" ({stats})"
        stats = json.loads(Path(stats).read_text())
    current = index_version(root)
    recorded = stats.get("index_version")
    if recorded is None:
        why = "record no index version (computed before versions existed, or elsewhere)"
    elif recorded != current:
        why = f"were computed from index version {recorded}, the index is now {current}"
    else:
        return
    raise StaleStatsError(
        f"band statistics{where} {why} of {Path(root) / 'index.parquet'}: recompute them with "
        f"`{recompute_command(root)}`"
    )


def _wavelengths(path: Path) -> list[float]:
    """Band wavelengths (nm) from a patch's tags: the dataset tag, else the band tags."""
    import rasterio

    with rasterio.open(path) as src:
        tags = src.tags()
        if "wavelengths" in tags:
            return [float(x) for x in tags["wavelengths"].split(",")]
        per_band = [src.tags(i).get("wavelength") for i in range(1, src.count + 1)]
    return [float(x) for x in per_band] if all(per_band) else []
