"""Downstream datasets: the synthetic land-cover task (the embedded default) and the paper's
nine datasets in the released layout, built from a curated folder and label sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spectralearth.layout import CuratedLayout
from spectralearth.profiling import StageUsage, Usage
from spectralearth.stages.result import Figure, StageResult, usage_metadata


@dataclass(frozen=True)
class DownstreamDataset(StageResult):
    name: str
    out: Path
    patches: tuple[tuple[str, int], ...]  # (split, patches)
    classes: tuple[str, ...]
    scenes_without_labels: int
    patches_without_labels: int
    class_spectra_png: Path | None
    details: dict
    usage: Usage | None = None

    def metadata(self) -> dict:
        meta = {
            **{f"patches_{split}": n for split, n in self.patches},
            "classes": len(self.classes),
            "scenes_without_labels": self.scenes_without_labels,
            "patches_without_labels": self.patches_without_labels,
            "unlabelled_pixels": int(self.details.get("unlabelled_pixels", 0)),
            "out_dir": self.out,
            **usage_metadata(self.usage),
        }
        if self.class_spectra_png is not None:
            meta["class_spectra"] = Figure(self.class_spectra_png, "mean spectrum per class")
        return meta

    def summary(self) -> str:
        splits = ", ".join(f"{s} {n}" for s, n in self.patches)
        left = (
            f"; {self.patches_without_labels} patches of {self.scenes_without_labels} scenes "
            "without labels left out"
            if self.scenes_without_labels
            else ""
        )
        return f"downstream dataset {self.name}: {splits} patches{left} -> {self.out}"


def downstream_dataset(curated: Path, labels: Path, out: Path) -> DownstreamDataset:
    """The synthetic land-cover segmentation task from ``curated`` and the generator's class
    maps in ``labels``, written to ``out`` (released layout). Scenes without a class map (real
    scenes that arrived later) are left out and counted."""
    from spectralearth.downstream.datasets.synth_landcover import (
        build_synth_landcover,
        class_mean_spectra,
    )
    from spectralearth.plots import class_spectra

    out = Path(out)
    with StageUsage() as usage:
        info = build_synth_landcover(CuratedLayout(curated).index, curated, labels, out)
    png = None
    if info["patches"].get("train"):
        means, wavelengths = class_mean_spectra(out)
        png = Path(
            class_spectra(means, wavelengths, out / "class_spectra.png", f"{out.name}: train")
        )
    return DownstreamDataset(
        name=out.name,
        out=out,
        patches=tuple(info["patches"].items()),
        classes=tuple(info["classes"].values()),
        scenes_without_labels=int(info.get("scenes_without_labels", 0)),
        patches_without_labels=int(info.get("patches_without_labels", 0)),
        class_spectra_png=png,
        details=info,
        usage=usage.result,
    )


@dataclass(frozen=True)
class BuiltDatasets(StageResult):
    out: Path
    reports: tuple[tuple[str, dict], ...]  # (dataset, build report)
    split_gap_csv: Path | None = None

    def metadata(self) -> dict:
        return {f"{name}/kept": int(r["kept"]) for name, r in self.reports}

    def summary(self) -> str:
        return "\n".join(
            f"{name}: kept {r['kept']} of {r['patches']} patches ({r['not_covered']} not covered, "
            f"{r['no_labels']} without a kept code), splits {r['splits']} ({r['split_scheme']}) "
            f"-> {r['out_dir']}"
            for name, r in self.reports
        )


VECTOR_SUFFIXES = (".parquet", ".gpkg", ".shp", ".geojson", ".json", ".fgb")


def build_datasets(
    curated: Path,
    out: Path,
    *,
    labels: Path | None = None,
    synth=None,
    sources: dict[str, str] | None = None,
    datasets: list[str] | None = None,
    split_gap: bool = False,
    **build_options,
) -> BuiltDatasets:
    """Downstream datasets in the released layout under ``out`` from ``curated``.

    ``sources`` maps a dataset name to a label source: a raster file or folder of tiles, or
    ``PATH:COLUMN`` for polygons (EuroCrops, BD Foret). Without it, all nine (or
    ``datasets``) come from the synthetic sources made from the generator's class maps in
    ``labels`` (``synth``: the archive's SynthSettings). ``build_options`` (``scheme``,
    ``seed``, ``min_coverage``, ``val_frac``, ``test_frac``, ``block_m``) go to
    ``build_dataset``. ``split_gap`` also scores the per-pixel forest on the random and the
    blocked split (``out/split_gap.csv``).
    """
    from spectralearth.downstream.build import (
        RasterLabelSource,
        VectorLabelSource,
        build_dataset,
        read_patch_grids,
    )

    out = Path(out)
    if not sources:
        from spectralearth.downstream.synth_labels import build_synthetic_downstream

        if labels is None or synth is None:
            raise ValueError("the synthetic sources need the labels folder and the synth settings")
        reports = build_synthetic_downstream(curated, labels, out, synth, datasets, **build_options)
    else:
        grids = read_patch_grids(curated)
        reports = {}
        for name, spec in sources.items():
            path, _, column = str(spec).rpartition(":")
            if column and Path(path).suffix.lower() in VECTOR_SUFFIXES:
                source = VectorLabelSource(path, column)
            else:
                source = RasterLabelSource(spec)
            reports[name] = build_dataset(name, curated, source, out, grids=grids, **build_options)
    gap_csv = None
    if split_gap:
        import pandas as pd

        from spectralearth.downstream.splits import split_gap as gap_of
        from spectralearth.io import atomic_write_text

        gaps = pd.concat([gap_of(Path(r["out_dir"])) for r in reports.values()])
        gap_csv = out / "split_gap.csv"
        atomic_write_text(gap_csv, gaps.to_csv(index=False))
    return BuiltDatasets(out, tuple(reports.items()), gap_csv)
