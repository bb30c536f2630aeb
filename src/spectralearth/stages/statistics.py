"""Band statistics: per-band mean and std of a curated folder's train split, written into
that folder (``CuratedLayout.stats``) so pretraining on the folder normalises with its own
statistics, never another folder's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spectralearth.layout import CuratedLayout
from spectralearth.profiling import StageUsage, Usage
from spectralearth.stages.result import StageResult, usage_metadata


@dataclass(frozen=True)
class BandStatistics(StageResult):
    path: Path
    n_patches: int
    split: str
    usage: Usage | None = None

    def metadata(self) -> dict:
        return {
            "n_patches": self.n_patches,
            "split": self.split,
            "path": self.path,
            **usage_metadata(self.usage),
        }

    def summary(self) -> str:
        return f"band statistics over {self.n_patches} patches ({self.split}) -> {self.path}"


def band_statistics(curated: Path, out: Path | None = None) -> BandStatistics:
    """Statistics of ``curated``'s train split into ``out`` (default: its own stats file)."""
    from spectralearth.patches.store import compute_band_stats

    out = Path(out) if out is not None else CuratedLayout(curated).stats
    with StageUsage() as usage:
        stats = compute_band_stats(curated, out)
    return BandStatistics(out, int(stats["n_patches"]), str(stats["split"]), usage.result)


class MissingStatisticsError(FileNotFoundError):
    """A curated folder without band statistics (the message says which command makes them)."""


def read_statistics(curated: Path, stats: Path | None = None) -> tuple[dict, Path]:
    """The band statistics to normalise ``curated`` with: ``stats`` if given (a
    ``band_stats.json``, or a folder with SpectralEarth's ``mu.npy``/``sigma.npy``), else the
    folder's own. Returns ``(stats dict with mean/std/wavelengths, the file read)``."""
    import json

    import numpy as np

    path = Path(stats) if stats is not None else CuratedLayout(curated).stats
    if path.is_dir() and (path / "mu.npy").is_file():
        values = {
            "mean": np.load(path / "mu.npy").astype(float).ravel().tolist(),
            "std": np.load(path / "sigma.npy").astype(float).ravel().tolist(),
        }
        return values, path
    if not path.is_file():
        if stats is None:
            raise MissingStatisticsError(
                f"no band statistics for {curated}: {path} is missing; make them with "
                f"`spectralearth stats --patches {curated}` (or pass --stats FILE)"
            )
        raise MissingStatisticsError(f"band statistics file not found: {path}")
    return json.loads(path.read_text()), path
