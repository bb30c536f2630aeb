"""Curate: products -> 202-band patches in the release layout (the one training copy), the
patch index, the band statistics and a dataset summary; index a released tree or migrate a
folder curated with shards.

``curate_archive`` (the CLI and the DVC stage) curates every product, going on past a bad one
(whatever the error: it is named and counted), then builds the index and the band
statistics of the curated folder, so the folder is ready to pretrain on. Dagster
runs the same steps as separate assets (one scene partition each, then the index, ...).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spectralearth.config import CurateSettings
from spectralearth.layout import CuratedLayout
from spectralearth.profiling import StageUsage, Usage
from spectralearth.stages.result import Figure, StageResult, usage_metadata
from spectralearth.stages.statistics import BandStatistics, band_statistics

if TYPE_CHECKING:
    from spectralearth.patches.migrate import StoreMigration
    from spectralearth.patches.release import ReleaseIndex


@dataclass(frozen=True)
class CuratedScene(StageResult):
    scene: str
    scene_id: int
    windows: int
    kept: int
    rejected: tuple[tuple[str, int], ...]  # (filter, windows it rejected)
    usage: Usage | None = None

    def metadata(self) -> dict:
        return {
            "scene_id": self.scene_id,
            "windows": self.windows,
            "kept": self.kept,
            **{f"rejected_{k}": v for k, v in self.rejected},
            **usage_metadata(self.usage),
        }

    def summary(self) -> str:
        rejected = ", ".join(f"{k} {v}" for k, v in self.rejected if v) or "none"
        return f"{self.scene}: kept {self.kept} of {self.windows} windows (rejected: {rejected})"


def curate_scene(
    product: Path, curated: Path, settings: CurateSettings, scene_keys: list[str]
) -> CuratedScene:
    """One scene's patches under ``curated``; scene ids are registered from ``scene_keys``
    (the archive's scenes, sorted) so they do not depend on the order scenes run in."""
    from spectralearth.patches.curate import curate_scene as _curate

    with StageUsage() as usage:
        res = _curate(product, curated, settings, scene_keys)
    return CuratedScene(
        scene=res.scene,
        scene_id=int(res.scene_id),
        windows=int(res.windows),
        kept=int(res.kept),
        rejected=tuple(sorted((str(k), int(v)) for k, v in res.rejected.items())),
        usage=usage.result,
    )


@dataclass(frozen=True)
class PatchIndex(StageResult):
    path: Path
    patches: int
    locations: int
    multitemporal_share: float
    splits: tuple[tuple[str, int], ...]
    usage: Usage | None = None

    def metadata(self) -> dict:
        return {
            "patches": self.patches,
            "locations": self.locations,
            "multitemporal_share": self.multitemporal_share,
            **{f"split_{k}": v for k, v in self.splits},
            "path": self.path,
            **usage_metadata(self.usage),
        }

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.splits)
        return (
            f"index: {self.patches} patches at {self.locations} locations ({splits}) -> {self.path}"
        )


def patch_index(curated: Path, settings: CurateSettings) -> PatchIndex:
    """Merge the scenes' fragments into the index of ``curated`` with location-disjoint splits."""
    from spectralearth.patches.store import build_index

    with StageUsage() as usage:
        index = build_index(curated, settings.val_frac, settings.test_frac)
    multi = index.groupby("location_id")["scene_id"].nunique() if len(index) else None
    return PatchIndex(
        path=CuratedLayout(curated).index,
        patches=len(index),
        locations=int(index["location_id"].nunique()) if len(index) else 0,
        multitemporal_share=float((multi > 1).mean()) if multi is not None else 0.0,
        splits=tuple(sorted(index["split"].value_counts().items())) if len(index) else (),
        usage=usage.result,
    )


def release_index(
    root: Path, settings: CurateSettings, skip_unreadable: bool = False, workers: int = 4
) -> ReleaseIndex:
    """Index a released SpectralEarth tree at ``root`` (``<root>/index.parquet``, splits by
    ``settings``' fractions) so that it trains without curating."""
    from spectralearth.patches.release import index_release

    return index_release(
        root,
        val_frac=settings.val_frac,
        test_frac=settings.test_frac,
        skip_unreadable=skip_unreadable,
        workers=workers,
    )


def store_migration(
    curated: Path, settings: CurateSettings, remove_shards: bool = True
) -> StoreMigration:
    """Turn a folder curated with training shards into the single-copy store."""
    from spectralearth.patches.migrate import migrate_store

    return migrate_store(
        curated, settings.val_frac, settings.test_frac, remove_shards=remove_shards
    )


@dataclass(frozen=True)
class ArchiveCuration(StageResult):
    curated: Path
    scenes: tuple[CuratedScene, ...]
    failed: tuple[tuple[str, str], ...]  # (product, reason)
    index: PatchIndex
    statistics: BandStatistics | None  # None when no patch was kept

    @property
    def ok(self) -> bool:
        """At least one scene curated and at least one patch kept."""
        return bool(self.scenes) and self.index.patches > 0

    def metadata(self) -> dict:
        return {
            "scenes": len(self.scenes),
            "failed": len(self.failed),
            "patches": self.index.patches,
            "locations": self.index.locations,
        }

    def summary(self) -> str:
        lines = [s.summary() for s in self.scenes]
        lines += [f"REJECTED {name}: {reason}" for name, reason in self.failed]
        return "\n".join([*lines, self.totals()])

    def totals(self) -> str:
        """The closing lines (what the CLI prints after the per-scene log)."""
        lines = []
        lines.append(
            f"curate: {self.index.patches} patches at {self.index.locations} locations from "
            f"{len(self.scenes)} scenes ({len(self.failed)} failed) -> {self.curated}"
        )
        if self.statistics is not None:
            lines.append(self.statistics.summary())
        elif self.scenes:
            lines.append(
                "curate: no window passed the filters in any scene: nothing to train on "
                "(see the rejection counts above; loosen the curate: thresholds in params.yaml "
                "or use --patch-size)"
            )
        return "\n".join(lines)


def curate_archive(
    products: list[Path],
    curated: Path,
    settings: CurateSettings,
    log: Callable[[str], None] = print,
) -> ArchiveCuration:
    """Curate every product (sorted; a product that fails is named with its reason and the
    rest go on), then build the index and the band statistics, holding
    ``curated`` for the whole run (:func:`~spectralearth.patches.lock.curation_lock`)."""
    from spectralearth.patches.curate import scene_key_for
    from spectralearth.patches.lock import curation_lock

    keys = sorted({scene_key_for(p) for p in products})  # ids in key order, not curation order
    with curation_lock(curated):  # a second curation of this folder stops at once
        return _curate_held(products, curated, settings, keys, log)


def _curate_held(products, curated, settings, keys, log) -> ArchiveCuration:
    from tqdm import tqdm

    scenes, failed = [], []
    # a bar on an interactive terminal only (disable=None); the log lines stay
    for product in tqdm(sorted(products), desc="curate", unit="scene", disable=None):
        try:
            res = curate_scene(product, curated, settings, keys)
        except Exception as exc:  # a broken product must not stop the archive ...
            if _output_fault(exc, curated):
                raise  # ... but a full disk or a read-only output stops everything
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            failed.append((Path(product).name, str(reason)))
            log(f"REJECTED {Path(product).name}: {reason}")
            continue
        scenes.append(res)
        log(res.summary())
    index = patch_index(curated, settings)
    stats = band_statistics(curated) if index.patches else None
    return ArchiveCuration(Path(curated), tuple(scenes), tuple(failed), index, stats)


def _output_fault(exc: BaseException, curated: Path) -> bool:
    """An error of the output folder (disk full, read-only, a file under ``curated``), which
    every later product would meet too: curation stops instead of rejecting each product."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return True
    name = getattr(exc, "filename", None)
    try:
        return bool(name) and Path(name).resolve().is_relative_to(Path(curated).resolve())
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class DatasetSummary(StageResult):
    out: Path
    counts: dict
    locations_png: Path
    quicklooks_png: Path

    def metadata(self) -> dict:
        return {
            **{k: v for k, v in self.counts.items() if isinstance(v, int | float | str)},
            "locations": Figure(self.locations_png, "locations"),
            "quicklooks": Figure(self.quicklooks_png, "RGB quicklooks"),
        }

    def summary(self) -> str:
        return f"summary: {json.dumps(self.counts)} -> {self.out}"


def dataset_summary(curated: Path, out: Path) -> DatasetSummary:
    """Counts, multitemporal share, a map of the locations and RGB quicklooks of a sample."""
    from spectralearth.io import atomic_write_text
    from spectralearth.patches.store import read_index
    from spectralearth.patches.summary import dataset_summary as counts_of
    from spectralearth.plots import locations_map, rgb_quicklooks

    out = Path(out)
    index = read_index(curated)
    counts = counts_of(index)
    quicklooks = rgb_quicklooks(curated, index, out / "quicklooks.png")
    locations = locations_map(index, out / "locations.png")
    atomic_write_text(out / "summary.json", json.dumps(counts, indent=1))
    return DatasetSummary(out, counts, Path(locations), Path(quicklooks))
