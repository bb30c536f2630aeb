"""Where every stage reads and writes: paths derived from the folder a stage is given.

Three layouts, each a frozen dataclass over one root folder:

- :class:`CuratedLayout`: a curated patches folder (release-layout patches: the one training
  copy; index, location registry, band statistics). ``spectralearth pretrain --data D`` reads ``D``'s own
  statistics, never another folder's.
- :class:`CheckpointLayout`: a pretraining output folder (weights, run.json, resumable
  Lightning checkpoints, loss curve).
- :class:`ResultsLayout`: an evaluation results folder: one CSV and one trained model per
  :class:`EvaluationKey` (checkpoint x dataset x recipe x protocol x head x label fraction), the
  gathered tables and figures.

:class:`DataLayout` is the default data folder of ``params.yaml`` (``data_dir``): the
embedded pipeline's folders, each of the layouts above at its default place. Nothing here
creates a folder or reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spectralearth.names import NO_HEAD, NO_PROTOCOL


@dataclass(frozen=True)
class CuratedLayout:
    """A curated patches folder (written by ``spectralearth curate``)::

    <root>/enmap/<location:07d>/<scene:05d>.tif   release-layout patches
    <root>/index.parquet                          patch index (GeoParquet, splits)
    <root>/shards/<scene>.npy, manifest.parquet   training shards of a folder curated before the
                                                  single-copy store (spectralearth migrate-store)
    <root>/scenes/<scene>.{parquet,json}          per-scene fragments and reports
    <root>/registry.sqlite                        location and scene ids
    <root>/band_stats.json                        per-band mean/std of the train split
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def index(self) -> Path:
        return self.root / "index.parquet"

    @property
    def registry(self) -> Path:
        return self.root / "registry.sqlite"

    @property
    def scenes(self) -> Path:
        return self.root / "scenes"

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def manifest(self) -> Path:
        return self.shards / "manifest.parquet"

    @property
    def stats(self) -> Path:
        return self.root / "band_stats.json"

    def patch(self, location_id: int, scene_id: int) -> Path:
        return self.root / "enmap" / f"{location_id:07d}" / f"{scene_id:05d}.tif"


@dataclass(frozen=True)
class CheckpointLayout:
    """A pretraining output folder (``spectralearth pretrain --out DIR``, an imported
    checkpoint)::

        <root>/model.safetensors        the encoder (spectral adapter included)
        <root>/run.json                 architecture, bands, band statistics, source, lineage
        <root>/checkpoints/last.ckpt    resumable Lightning checkpoint
        <root>/loss.png                 the training curve
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def weights(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def run(self) -> Path:
        return self.root / "run.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def loss_curve(self) -> Path:
        return self.root / "loss.png"


def _fraction_label(label_fraction: float) -> str:
    """``1.0 -> "lf1"``, ``0.1 -> "lf0.1"`` (a path part that sorts and reads well)."""
    return f"lf{float(label_fraction):g}"


@dataclass(frozen=True)
class EvaluationKey:
    """One evaluation: a checkpoint (folder name) or baseline on a dataset under a protocol
    with a head, trained with a recipe (``evaluate.recipes``) on a share of the train split."""

    checkpoint: str
    dataset: str
    protocol: str
    head: str
    label_fraction: float = 1.0
    recipe: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", Path(str(self.dataset)).name)
        object.__setattr__(self, "label_fraction", float(self.label_fraction))
        for part in (self.checkpoint, self.dataset, self.recipe, self.protocol, self.head):
            if not part or "/" in part or part in (".", ".."):
                raise ValueError(f"evaluation key part {part!r} is not a plain name")

    @property
    def parts(self) -> tuple[str, ...]:
        return (
            self.checkpoint,
            self.dataset,
            self.recipe,
            self.protocol,
            self.head,
            _fraction_label(self.label_fraction),
        )

    @property
    def title(self) -> str:
        what = self.checkpoint
        if self.protocol != NO_PROTOCOL:
            what += f" ({self.protocol}"
            what += f", {self.head} head)" if self.head != NO_HEAD else ")"
        fraction = "" if self.label_fraction == 1.0 else f", {self.label_fraction:g} of labels"
        recipe = "" if self.recipe in ("cpu", "none") else f", {self.recipe} recipe"
        return f"{what} on {self.dataset}{fraction}{recipe}"

    @property
    def stem(self) -> str:
        return "-".join(self.parts)


@dataclass(frozen=True)
class ResultsLayout:
    """An evaluation results folder::

    <root>/evaluations/<checkpoint>/<dataset>/<recipe>/<protocol>/<head>/lf<fraction>.csv
    <root>/heads/<checkpoint>/<dataset>/<recipe>/<protocol>/<head>/lf<fraction>/  trained model
    <root>/figures/<stem>-{confusion,per-class}.png
    <root>/evaluations.csv, benchmark.csv, report.md                      gathered
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def csv(self, key: EvaluationKey) -> Path:
        *folders, fraction = key.parts
        return self.root.joinpath("evaluations", *folders, f"{fraction}.csv")

    def trained_model(self, key: EvaluationKey) -> Path:
        return self.root.joinpath("heads", *key.parts)

    def confusion_png(self, key: EvaluationKey) -> Path:
        return self.root / "figures" / f"{key.stem}-confusion.png"

    def per_class_png(self, key: EvaluationKey) -> Path:
        return self.root / "figures" / f"{key.stem}-per-class.png"

    def evaluation_csvs(self) -> list[Path]:
        """Every finished evaluation's CSV, sorted."""
        return sorted((self.root / "evaluations").glob("*/*/*/*/*/lf*.csv"))

    @property
    def all_rows(self) -> Path:
        return self.root / "evaluations.csv"

    @property
    def benchmark(self) -> Path:
        return self.root / "benchmark.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.md"


@dataclass(frozen=True)
class DataLayout:
    """The data folder of ``params.yaml`` and its stages' default places (DESIGN.md)."""

    data_dir: Path
    archive: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "archive", Path(self.archive))

    @property
    def labels(self) -> Path:
        """Class maps the synthetic generator writes (the synthetic task's labels)."""
        return self.data_dir / "labels"

    @property
    def catalog(self) -> Path:
        return self.data_dir / "catalog" / "catalog.parquet"

    @property
    def patches(self) -> Path:
        return self.data_dir / "patches"

    @property
    def curated(self) -> CuratedLayout:
        return CuratedLayout(self.patches)

    @property
    def summary(self) -> Path:
        return self.data_dir / "summary"

    @property
    def validation(self) -> Path:
        return self.data_dir / "validation"

    @property
    def models(self) -> Path:
        return self.data_dir / "models"

    def checkpoint(self, name: str) -> CheckpointLayout:
        return CheckpointLayout(self.models / name)

    @property
    def downstream(self) -> Path:
        return self.data_dir / "downstream"

    @property
    def results(self) -> ResultsLayout:
        return ResultsLayout(self.data_dir / "results")

    @property
    def maps(self) -> Path:
        return self.data_dir / "maps"

    def scene_map(self, scene: str) -> Path:
        return self.maps / f"{scene}.tif"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"
