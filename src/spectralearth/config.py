"""Typed settings loaded from params.yaml, the one source of defaults, and data paths."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spectralearth.names import HEADS, PROTOCOLS

PARAMS_ENV = "SPECTRALEARTH_PARAMS"
DATA_DIR_ENV = "SPECTRALEARTH_DATA_DIR"
ARCHIVE_ENV = "SPECTRALEARTH_ARCHIVE"


def _from_dict(cls: type, values: dict[str, Any], where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"params.yaml [{where}]: unknown keys {sorted(unknown)}")
    missing = {
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    }
    if missing:
        raise ValueError(f"params.yaml [{where}]: missing keys {sorted(missing)}")
    return cls(**values)


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    """YAML lists as tuples (settings are frozen and hashable)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


@dataclass(frozen=True)
class SynthSettings:
    scenes: int
    size: int
    seed: int
    revisit_fraction: float


@dataclass(frozen=True)
class CurateSettings:
    patch_size: int
    max_nodata_frac: float
    max_cloud_frac: float
    max_snow_frac: float
    max_haze_frac: float
    max_cloudshadow_frac: float
    max_cirrus_frac: float
    val_frac: float
    test_frac: float


@dataclass(frozen=True)
class PretrainSettings:
    method: str
    backbone: str
    steps: int
    batch_size: int
    crop_size: int
    lr: float
    precision: str
    accelerator: str
    devices: int
    num_workers: int
    memory_bank_size: int
    seed: int
    profile: str = "custom"
    # Optional (defaults keep older params files loading):
    epochs: int = 0  # > 0: run this many epochs and ignore `steps`
    warmup_steps: int = 0  # linear LR warm-up, in optimizer steps ...
    warmup_epochs: float = 0.0  # ... plus this many epochs of them
    weight_decay: float | None = None  # None: the method's default
    accumulate_grad_batches: int = 1  # batch_size is the global batch: per-device micro-batch
    #                                   = batch_size / (devices x num_nodes x accumulation)
    gradient_clip_val: float = 0.0  # 0: no clipping
    checkpoint_every_n_steps: int = 0  # 0: no resumable checkpoints (OUT_DIR/checkpoints)
    strategy: str = "auto"  # Lightning strategy ("auto" = DDP with several devices)
    num_nodes: int = 1
    mask_ratio: float = 0.9  # MAE


# Values of the recipe fields that take one of a few words (checked at load).
RECIPE_CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adam", "adamw"),
    "scheduler": ("constant", "cosine"),
    "normalisation": ("dataset", "reference"),
    "select": ("metric", "val_loss"),
    "frozen_batchnorm": ("eval", "train"),
    "first_n_from": ("adapter", "encoder"),
}
# EvaluateSettings keys that override the chosen recipe (the CLI's --epochs, --head, ...).
RECIPE_OVERRIDES = ("head", "epochs", "batch_size", "lr")


@dataclass(frozen=True)
class RecipeSettings:
    """How a downstream head (and, by protocol, part of the encoder) trains: one entry of
    ``evaluate.recipes`` in params.yaml. The field defaults are the ``cpu`` recipe (the fast
    one of ``make run``); params.yaml's ``paper`` entry is the SpectralEarth reference code's
    (``docs``: every difference between the two).

    ``datasets`` maps a dataset name to the keys that differ for it (the reference's batch
    sizes, crop scales, weight decay, epochs); :meth:`for_dataset` applies them.
    """

    head: str = "linear"  # linear | fcn | upconv | mlp | paper (spectralearth.models.heads)
    epochs: int = 15
    batch_size: int = 8
    lr: float = 0.01
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    scheduler: str = "constant"  # constant | cosine (per epoch, T_max = epochs)
    min_lr: float = 0.0  # the cosine schedule's floor (eta_min)
    encoder_lr_scale: float = 0.1  # encoder parameters that train: lr x this
    augment: bool = False  # RandomResizedCrop(crop_scale) + flips on training batches
    crop_scale: tuple[float, float] = (0.4, 1.0)
    normalisation: str = "dataset"  # dataset: train-split statistics | reference: published
    reference_stats: str | None = None  # mu.npy/sigma.npy folder (downstream.normalisation)
    standardise_features: bool = True  # per-channel train statistics of the encoder features
    select: str = "metric"  # the epoch scored on test: best val metric | lowest val loss
    early_stopping_patience: int = 0  # > 0: stop after this many epochs without a better pick
    frozen_batchnorm: str = "eval"  # BatchNorm of frozen encoder parts: eval | train
    first_n_from: str = "adapter"  # first-n counts from the adapter | encoder stages only
    cache_features: bool = True  # frozen + linear head: run the encoder once per image
    resize_to: int | None = None  # px images are resized to where the loader resizes (HYPERVIEW)
    datasets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        object.__setattr__(self, "datasets", {k: dict(v) for k, v in self.datasets.items()})

    def check(self, where: str) -> RecipeSettings:
        """Raise naming ``where`` (the params.yaml section) for a value out of its choices."""
        for key, allowed in (*RECIPE_CHOICES.items(), ("head", HEADS)):
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"params.yaml [{where}]: {key} {getattr(self, key)!r} is not one of {allowed}"
                )
        lo, hi = self.crop_scale
        if not (len(self.crop_scale) == 2 and 0 < lo <= hi <= 1):
            raise ValueError(
                f"params.yaml [{where}]: crop_scale {self.crop_scale} must be 0 < lo <= hi <= 1"
            )
        for positive in ("epochs", "batch_size", "resize_to"):
            if getattr(self, positive) is not None and int(getattr(self, positive)) < 1:
                raise ValueError(f"params.yaml [{where}]: {positive} must be >= 1")
        known = {f.name for f in dataclasses.fields(self)} - {"datasets"}
        for name, values in self.datasets.items():
            if set(values) - known:
                raise ValueError(
                    f"params.yaml [{where}.datasets.{name}]: unknown keys {sorted(set(values) - known)}"
                )
            dataclasses.replace(self, datasets={}, **values).check(f"{where}.datasets.{name}")
        return self

    def for_dataset(self, dataset: str | None) -> RecipeSettings:
        """This recipe with ``datasets[dataset]`` applied (and no per-dataset table left)."""
        values = dict(self.datasets.get(str(dataset), {})) if dataset is not None else {}
        return dataclasses.replace(self, datasets={}, **values)


@dataclass(frozen=True)
class EvaluateSettings:
    """Downstream evaluation: which task and protocol, the recipe that trains the head, and
    where it runs (``accelerator``, ``devices``, ``precision`` as Lightning takes them).

    ``head``, ``epochs``, ``batch_size`` and ``lr`` override the chosen recipe when given
    (the CLI's ``--head``, ``--epochs``); after construction they hold the recipe's values
    where they were not given, and :attr:`overridden` names those that were.
    """

    task: str
    protocol: str
    seed: int
    head: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    # Optional (defaults keep older params files loading):
    seeds: tuple[int, ...] = ()  # several seeds: the results table shows mean and std
    baselines: tuple[str, ...] = ("random_init",)  # beside each checkpoint (also random_forest)
    recipe: str = "cpu"  # an entry of `recipes`
    recipes: Mapping[str, Any] = field(default_factory=dict, hash=False)
    accelerator: str = "auto"  # auto (a GPU when there is one) | cpu | gpu
    devices: int = 1  # one device: an evaluation is one process
    precision: str = "32-true"  # Lightning precision, e.g. bf16-mixed on a GPU
    num_workers: int = 0  # data-loading processes
    overridden: tuple[str, ...] | None = None  # set at construction (see the class doc)
    resolved_for: str | None = None  # the recipe the unset overrides were filled from

    def __post_init__(self) -> None:
        # checked here so a typo in params.yaml fails at load, not after hours of pretraining
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"params.yaml [evaluate]: protocol {self.protocol!r} is not one of {PROTOCOLS}"
            )
        if self.head is not None and self.head not in HEADS:
            raise ValueError(f"params.yaml [evaluate]: head {self.head!r} is not one of {HEADS}")
        recipes = {}
        for name, values in dict(self.recipes).items():
            if isinstance(values, RecipeSettings):
                recipes[name] = values
            else:
                where = f"evaluate.recipes.{name}"
                recipes[name] = _from_dict(RecipeSettings, dict(values or {}), where).check(where)
        recipes.setdefault("cpu", RecipeSettings())
        object.__setattr__(self, "recipes", recipes)
        if self.recipe not in recipes:
            raise ValueError(
                f"params.yaml [evaluate]: recipe {self.recipe!r} is not one of "
                f"{tuple(recipes)} (evaluate.recipes)"
            )
        if int(self.devices) != 1:
            raise ValueError(
                f"params.yaml [evaluate]: devices {self.devices!r}: a downstream evaluation runs "
                "on one device (run several evaluations side by side instead)"
            )
        # Given at first construction, or changed since (dataclasses.replace(s, epochs=2)):
        # a value that is not the recipe's it was filled from.
        filled_from = recipes.get(self.resolved_for) if self.overridden is not None else None
        given = set(self.overridden or ())
        for key in RECIPE_OVERRIDES:
            value = getattr(self, key)
            if value is not None and key not in given:
                if filled_from is None or value != getattr(filled_from, key):
                    given.add(key)
        object.__setattr__(self, "overridden", tuple(k for k in RECIPE_OVERRIDES if k in given))
        base = recipes[self.recipe]
        for key in RECIPE_OVERRIDES:
            if key not in given:
                object.__setattr__(self, key, getattr(base, key))
        object.__setattr__(self, "resolved_for", self.recipe)

    def recipe_for(self, dataset: str | None = None, recipe: str | None = None) -> RecipeSettings:
        """The recipe (``recipe`` or :attr:`recipe`) for ``dataset``, with this section's
        overrides (:attr:`overridden`) applied last."""
        name = recipe or self.recipe
        if name not in self.recipes:
            raise ValueError(f"unknown recipe {name!r}; params.yaml [evaluate.recipes] has "
                             f"{tuple(self.recipes)}")  # fmt: skip
        chosen = self.recipes[name].for_dataset(dataset)
        return dataclasses.replace(chosen, **{k: getattr(self, k) for k in self.overridden or ()})


@dataclass(frozen=True)
class PredictSettings:
    """Scene maps (``spectralearth predict``); every key optional."""

    tile: int | None = None  # px; None = the patch size the model was trained on
    overlap: int | None = None  # px; None = a quarter tile
    mask_layers: tuple[str, ...] = ("QL_QUALITY_CLOUD",)  # QL layers masked besides nodata
    model: str | None = None  # trained model for the scene_maps asset; None = the default
    device: str = "auto"  # auto (cuda when there is a GPU) | cpu | cuda | cuda:N
    batch_size: int | None = None  # tiles per forward pass; None = 8 on the CPU, 32 on a GPU


@dataclass(frozen=True)
class MlflowSettings:
    experiment: str
    registered_model: str


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes, under one data directory (see DESIGN.md)."""

    data_dir: Path
    archive: Path

    @property
    def catalog(self) -> Path:
        return self.data_dir / "catalog" / "catalog.parquet"

    @property
    def patches(self) -> Path:
        return self.data_dir / "patches"

    @property
    def stats(self) -> Path:
        return self.data_dir / "stats" / "band_stats.json"

    @property
    def models(self) -> Path:
        return self.data_dir / "models"

    @property
    def labels(self) -> Path:
        """Class maps the synthetic generator wrote beside the archive (downstream labels)."""
        return self.archive.parent / "labels"

    @property
    def downstream(self) -> Path:
        return self.data_dir / "downstream"

    @property
    def results(self) -> Path:
        return self.data_dir / "results"

    @property
    def validation(self) -> Path:
        return self.data_dir / "validation"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{(self.mlflow_dir / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifacts(self) -> Path:
        return (self.mlflow_dir / "artifacts").resolve()

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"


@dataclass(frozen=True)
class Settings:
    params_file: Path
    paths: Paths
    synth: SynthSettings
    curate: CurateSettings
    pretrain: PretrainSettings
    evaluate: EvaluateSettings
    mlflow: MlflowSettings
    predict: PredictSettings = field(default_factory=PredictSettings)
    raw: dict = field(repr=False, default_factory=dict)


def project_root() -> Path:
    """The repository root (where params.yaml lives) for an editable install."""
    return Path(__file__).resolve().parents[2]


def find_params_file(path: str | os.PathLike | None = None) -> Path:
    if path is not None:
        return Path(path)
    if os.environ.get(PARAMS_ENV):
        return Path(os.environ[PARAMS_ENV])
    for candidate in (Path.cwd() / "params.yaml", project_root() / "params.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"params.yaml not found in {Path.cwd()} or {project_root()}; set {PARAMS_ENV}"
    )


def load_settings(
    path: str | os.PathLike | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    profile: str | None = None,
) -> Settings:
    """Read params.yaml into typed settings.

    ``overrides`` maps a section to keys to replace (the CLI and Dagster config use it);
    ``profile`` picks a pretraining profile other than ``pretrain.profile``.
    """
    params_file = find_params_file(path).resolve()
    with open(params_file) as fh:
        raw = yaml.safe_load(fh) or {}
    overrides = overrides or {}

    def section(name: str) -> dict[str, Any]:
        values = dict(raw.get(name) or {})
        values.update({k: v for k, v in (overrides.get(name) or {}).items() if v is not None})
        return values

    base = params_file.parent
    data_dir = Path(os.environ.get(DATA_DIR_ENV) or base / raw.get("data_dir", "data"))
    if os.environ.get(ARCHIVE_ENV):
        archive = Path(os.environ[ARCHIVE_ENV])
    elif raw.get("archive_dir"):
        archive = base / raw["archive_dir"]  # absolute paths stay as they are
    else:
        archive = data_dir / "archive"

    pre = dict(raw.get("pretrain") or {})
    chosen = profile or pre.get("profile")
    profiles = pre.get("profiles") or {}
    if chosen not in profiles:
        raise ValueError(
            f"params.yaml [pretrain]: unknown profile {chosen!r}; have {sorted(profiles)}"
        )
    # A profile holds settings common to every method plus optional per-method entries
    # (`methods: {dino: {...}}`) applied over them for the method that runs.
    pre_values = dict(profiles[chosen])
    per_method = pre_values.pop("methods", None) or {}
    pre_overrides = {k: v for k, v in (overrides.get("pretrain") or {}).items() if v is not None}
    method = pre_overrides.get("method", pre_values.get("method"))
    pre_values.update(per_method.get(method) or {})
    pre_values.update(pre_overrides)
    pre_values["profile"] = chosen

    return Settings(
        params_file=params_file,
        paths=Paths(data_dir=data_dir, archive=archive),
        synth=_from_dict(SynthSettings, section("synth"), "synth"),
        curate=_from_dict(CurateSettings, section("curate"), "curate"),
        pretrain=_from_dict(PretrainSettings, pre_values, f"pretrain.profiles.{chosen}"),
        evaluate=_from_dict(EvaluateSettings, _tuples(section("evaluate")), "evaluate"),
        mlflow=_from_dict(MlflowSettings, section("mlflow"), "mlflow"),
        predict=_from_dict(PredictSettings, _tuples(section("predict")), "predict"),
        raw=raw,
    )
