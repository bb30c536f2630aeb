"""The published per-band statistics the paper recipe normalises with (no torch).

The SpectralEarth reference code normalises every downstream image with fixed statistics,
not with statistics of the task's train split: SpectralEarth's pretraining ``mu``/``sigma``
for EnMAP tasks (202 bands) and its own files for the other sensors (DESIS 235 bands, EO-1
Hyperion 198, HYPERVIEW 150), in the image's units (reflectance x 10000 for the satellites).

A statistics folder may be laid out either way (both are looked for, in this order)::

    <folder>/mu.npy, sigma.npy                                 EnMAP
    <folder>/statistics_other_sensors/<desis|eo1|hyperview>/   the others  (../shared/data)

    <folder>/statistics/mu.npy, sigma.npy                      EnMAP
    <folder>/<desis|eo1|hyperview>_statistics/                 the others  (the reference
                                                               repository's data/ folder)

The folder is ``folder`` when given, else ``$SPECTRALEARTH_REFERENCE_STATS``, else
``../shared/data/spectralearth_reference`` beside the project.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REFERENCE_STATS_ENV = "SPECTRALEARTH_REFERENCE_STATS"
# card sensor -> the reference code's name for its statistics
SENSOR_KEYS = {"EnMAP": "enmap", "DESIS": "desis", "Hyperion": "eo1", "Intuition-1": "hyperview"}


class ReferenceStatsError(FileNotFoundError):
    """The reference statistics of a sensor are missing or do not fit the dataset."""


def default_reference_stats_dir() -> Path:
    if os.environ.get(REFERENCE_STATS_ENV):
        return Path(os.environ[REFERENCE_STATS_ENV])
    from spectralearth.config import project_root

    return project_root().parent / "shared" / "data" / "spectralearth_reference"


def _candidates(folder: Path, key: str) -> list[Path]:
    if key == "enmap":
        return [folder, folder / "statistics"]
    return [folder / "statistics_other_sensors" / key, folder / f"{key}_statistics"]


def reference_stats(
    sensor: str, bands: int, folder: str | os.PathLike | None = None
) -> dict[str, object]:
    """``{"mean", "std", "source"}`` of ``sensor`` (a card's sensor) for ``bands`` bands.

    Raises :class:`ReferenceStatsError` naming what was looked for when the files are
    missing, and when they hold another band count than the dataset's.
    """
    if sensor not in SENSOR_KEYS:
        raise ReferenceStatsError(
            f"no reference statistics for sensor {sensor!r} (have {', '.join(SENSOR_KEYS)}); "
            "use the recipe's normalisation: dataset"
        )
    root = Path(folder) if folder else default_reference_stats_dir()
    tried = _candidates(root, SENSOR_KEYS[sensor])
    for where in tried:
        mu, sigma = where / "mu.npy", where / "sigma.npy"
        if mu.is_file() and sigma.is_file():
            mean = np.load(mu, allow_pickle=False).astype(np.float64).ravel()
            std = np.load(sigma, allow_pickle=False).astype(np.float64).ravel()
            if len(mean) != bands or len(std) != bands:
                raise ReferenceStatsError(
                    f"{mu}: {len(mean)} bands of {sensor} statistics, the dataset has {bands}"
                )
            if not (np.isfinite(std).all() and (std > 0).all()):
                raise ReferenceStatsError(f"{sigma}: every std must be finite and > 0")
            return {"mean": mean.tolist(), "std": std.tolist(), "source": str(where)}
    raise ReferenceStatsError(
        f"reference statistics of {sensor} not found: no mu.npy + sigma.npy in "
        f"{', '.join(map(str, tried))} (set the recipe's reference_stats or "
        f"${REFERENCE_STATS_ENV})"
    )
