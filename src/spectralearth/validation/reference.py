"""Reference statistics for the band-drift warning (202 per-band means and stds,
reflectance x 10000).

They come, in this order, from: an argument; ``validate.reference_stats`` in params.yaml
(``$SPECTRALEARTH_REFERENCE_STATS`` wins over it; a folder with SpectralEarth's ``mu.npy``
and ``sigma.npy``, or a ``band_stats.json``); the curated folder's own ``band_stats.json``
of an earlier run (then the warning measures drift between runs). With none, the drift gate
is skipped and says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spectralearth.config import REFERENCE_ENV  # noqa: F401  (re-exported: the env variable)
from spectralearth.layout import CuratedLayout
from spectralearth.validation.settings import GateSettings

N_BANDS = 202


@dataclass(frozen=True)
class Reference:
    """Per-band mean and std (reflectance x 10000) to measure drift against."""

    mean: np.ndarray
    std: np.ndarray
    source: str


def load_reference(path: str | os.PathLike) -> Reference:
    """A folder with ``mu.npy``/``sigma.npy`` (SpectralEarth) or a ``band_stats.json``."""
    path = Path(path)
    if path.is_dir():
        mean, std = np.load(path / "mu.npy"), np.load(path / "sigma.npy")
    elif path.suffix == ".json" and path.is_file():
        stats = json.loads(path.read_text())
        mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
    else:
        raise FileNotFoundError(
            f"reference statistics not found: {path} (want a folder with mu.npy and sigma.npy, "
            "or a band_stats.json)"
        )
    mean, std = np.asarray(mean, np.float64).ravel(), np.asarray(std, np.float64).ravel()
    if mean.shape != (N_BANDS,) or std.shape != (N_BANDS,) or not (std > 0).all():
        raise ValueError(f"{path}: want {N_BANDS} means and {N_BANDS} positive stds")
    return Reference(mean, std, str(path))


def resolve_reference(
    settings: GateSettings,
    curated_dir: Path | None = None,
    reference: Reference | str | os.PathLike | None = None,
) -> Reference | None:
    """The drift reference: argument > params.yaml (or its env variable) > the curated
    folder's own ``band_stats.json`` > None."""
    if isinstance(reference, Reference):
        return reference
    if reference is not None:
        return load_reference(reference)
    configured = settings.validate.reference_stats
    if configured is not None:
        return load_reference(configured)
    if curated_dir is not None and CuratedLayout(curated_dir).stats.is_file():
        return load_reference(CuratedLayout(curated_dir).stats)
    return None
