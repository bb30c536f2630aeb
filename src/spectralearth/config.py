"""Typed settings loaded from params.yaml, the one source of defaults.

Every value is checked when the file is read: its type (an integer is not ``"128px"`` nor
``128.5``; a number is not ``"0.01"``), its range (shares in [0, 1], sizes > 0) and the
rules between keys (``val_frac + test_frac < 1``). An error names the file, the section, the
key, the value and what was expected, so a typo fails at load and not hours later.

Where the data lives is :class:`spectralearth.layout.DataLayout` (``Settings.layout``); the
stages take explicit paths and use the layout only for defaults.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spectralearth.layout import DataLayout
from spectralearth.names import HEADS, LAUNCHERS, LR_SCHEDULES, PROTOCOLS

PARAMS_ENV = "SPECTRALEARTH_PARAMS"
DATA_DIR_ENV = "SPECTRALEARTH_DATA_DIR"
ARCHIVE_ENV = "SPECTRALEARTH_ARCHIVE"
REFERENCE_ENV = "SPECTRALEARTH_REFERENCE_STATS"
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"


class ParamsError(ValueError):
    """A value of params.yaml (or an override of it) that cannot be used."""


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as the annotated type ``tp`` (int, float, str, bool, tuple[...], X | None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ParamsError as exc:
                errors.append(str(exc))
        raise ParamsError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(
                f"{where}: expected an integer, got {value!r} ({type(value).__name__})"
            )
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{where}: expected a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r} ({type(value).__name__})")
        return value
    return value


def _from_dict(cls: type, values: dict[str, Any], where: str):
    """``cls(**values)`` with every value checked against its annotation."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ParamsError(f"[{where}]: unknown keys {sorted(unknown)}; known: {sorted(fields)}")
    missing = {
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    }
    if missing:
        raise ParamsError(f"[{where}]: missing keys {sorted(missing)}")
    typed = {k: _coerce(v, hints[k], f"[{where}] {k}") for k, v in values.items()}
    try:
        return cls(**typed)
    except ParamsError as exc:
        raise ParamsError(f"[{where}] {exc}") from None
    except ValueError as exc:  # a check that names its section itself ("params.yaml [x]: ...")
        text = str(exc).removeprefix("params.yaml ")
        raise ParamsError(text if text.startswith("[") else f"[{where}] {text}") from None


def _check(rules: list[tuple[bool, str]]) -> None:
    for ok, message in rules:
        if not ok:
            raise ParamsError(message)


def _share(value: float) -> bool:
    return 0.0 <= value <= 1.0


@dataclass(frozen=True)
class SynthSettings:
    scenes: int
    size: int
    seed: int
    revisit_fraction: float

    def __post_init__(self) -> None:
        _check(
            [
                (self.scenes >= 1, f"scenes: {self.scenes} must be >= 1"),
                (self.size >= 16, f"size: {self.size} px must be >= 16"),
                (_share(self.revisit_fraction), "revisit_fraction must lie in [0, 1]"),
            ],
        )


# Each quality filter's limit in CurateSettings (patches.curate.FILTERS applies them in order)
FILTER_LIMITS = (
    "max_nodata_frac",
    "max_cloud_frac",
    "max_snow_frac",
    "max_haze_frac",
    "max_cloudshadow_frac",
    "max_cirrus_frac",
)


def filters_off() -> dict[str, float]:
    """``curate`` overrides that keep every window (each filter's limit at 1): the most
    work a scene can cost, for benchmarks and tests of the store."""
    return dict.fromkeys(FILTER_LIMITS, 1.0)


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
    # an L2A product lacking QL layers: "refuse" it, or "ignore" (curate it with those
    # layers' filters off, logged and recorded in its scene report)
    missing_masks: str = "refuse"

    def __post_init__(self) -> None:
        shares = [
            (_share(getattr(self, k)), f"{k}: {getattr(self, k)} must lie in [0, 1]")
            for k in (*FILTER_LIMITS, "val_frac", "test_frac")
        ]
        _check(
            [
                (self.patch_size > 0, f"patch_size: {self.patch_size} px must be > 0"),
                *shares,
                (
                    self.val_frac + self.test_frac < 1.0,
                    f"val_frac + test_frac = {self.val_frac + self.test_frac:g} leaves no "
                    "location for training: keep it below 1",
                ),
            ],
        )


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
    # The recipe: None = the method's default, which is the SpectralEarth reference's
    # (each method's module docstring in spectralearth.ssl). A value is a deliberate deviation.
    crop_scale: tuple[float, float] | None = None  # random resized crop area range
    lr_schedule: str | None = None  # multistep | cosine_to_zero | cosine_over_run
    lr_milestones: tuple[float, ...] | None = None  # multistep: fractions of the run
    head_hidden_dim: int | None = None  # MoCo/DINO projection head width (reference 2048)
    adamw_betas: tuple[float, float] | None = None  # DINO/MAE (reference: torch's 0.9, 0.999)
    weight_decay_all_parameters: bool = False  # AdamW methods: True decays norms, biases and
    #   tokens too, as the reference code does; False: lightly's get_weight_decay_parameters
    sync_batchnorm: bool = False  # BatchNorm statistics over all devices (reference: on)
    collapse_std_fraction: float = 0.1  # collapsed when feature std < this / sqrt(dim)
    # EMA momentum of MoCo's key encoder / DINO's teacher at the start of the run (None: the
    # reference's 0.999 / 0.996). A run of a few hundred steps needs less (e.g. 0.99): at
    # 0.999 the key encoder is still ~80% its random init after 200 steps.
    ema_momentum: float | None = None

    def __post_init__(self) -> None:
        from spectralearth.names import BACKBONES, METHODS

        _check(
            [
                (self.method in METHODS, f"method {self.method!r} is not one of {METHODS}"),
                (
                    self.backbone in BACKBONES,
                    f"backbone {self.backbone!r} is not one of {BACKBONES}",
                ),
                (self.steps >= 0 and self.epochs >= 0, "steps and epochs must be >= 0"),
                (self.batch_size > 0, f"batch_size: {self.batch_size} must be > 0"),
                (self.crop_size > 0, f"crop_size: {self.crop_size} px must be > 0"),
                (self.lr > 0, f"lr: {self.lr} must be > 0"),
                (self.num_workers >= 0, "num_workers must be >= 0"),
                (0.0 < self.mask_ratio < 1.0, "mask_ratio must lie in (0, 1)"),
                (
                    self.crop_scale is None
                    or 0.0 < self.crop_scale[0] <= self.crop_scale[-1] <= 1.0,
                    f"crop_scale {list(self.crop_scale or ())} must be two area fractions "
                    "0 < low <= high <= 1",
                ),
                (
                    self.crop_scale is None or len(self.crop_scale) == 2,
                    "crop_scale must be two numbers",
                ),
                (
                    self.ema_momentum is None or 0.0 <= self.ema_momentum < 1.0,
                    f"ema_momentum {self.ema_momentum} must lie in [0, 1)",
                ),
                (
                    self.lr_schedule is None or self.lr_schedule in LR_SCHEDULES,
                    f"lr_schedule {self.lr_schedule!r} is not one of {LR_SCHEDULES}",
                ),
            ],
        )


@dataclass(frozen=True)
class LaunchSettings:
    """How the Dagster asset starts pretraining (``launch`` in params.yaml; the CLI and DVC
    run in the process they are given, under torchrun when a user starts them so). A section
    of its own, not ``pretrain``'s: it changes no result, so DVC must not rerun for it.

    ``launcher``: ``in_process`` trains in the Dagster step's process (one device only:
    Lightning's own multi-device launch would re-run the Dagster process); ``torchrun``
    starts ``torchrun -m spectralearth.cli pretrain`` through Dagster Pipes on this node
    (rank 0 reports logs and metadata back); ``auto`` is ``torchrun`` when the profile
    runs more than one process, else ``in_process``. ``nproc_per_node``: torchrun's
    processes; None = the profile's ``devices`` (every visible GPU for -1).
    """

    launcher: str = "auto"
    nproc_per_node: int | None = None

    def __post_init__(self) -> None:
        _check(
            [
                (
                    self.launcher in LAUNCHERS,
                    f"launcher {self.launcher!r} is not one of {LAUNCHERS}",
                ),
                (
                    self.nproc_per_node is None or self.nproc_per_node >= 1,
                    f"nproc_per_node: {self.nproc_per_node} must be >= 1 (or null)",
                ),
            ]
        )


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
    label_fractions: tuple[float, ...] = (1.0,)  # shares of the train split, one result each
    recipe: str = "cpu"  # an entry of `recipes`
    recipes: Mapping[str, Any] = field(default_factory=dict, hash=False)
    accelerator: str = "auto"  # auto (a GPU when there is one) | cpu | gpu
    devices: int = 1  # one device: an evaluation is one process
    precision: str = "32-true"  # Lightning precision, e.g. bf16-mixed on a GPU
    num_workers: int = 0  # data-loading processes
    overridden: tuple[str, ...] | None = None  # set at construction (see the class doc)
    resolved_for: str | None = None  # the recipe the unset overrides were filled from

    def __post_init__(self) -> None:
        from spectralearth.names import BASELINES

        _check(
            [
                (
                    all(b in BASELINES for b in self.baselines),
                    f"baselines {list(self.baselines)}: each must be one of {BASELINES}",
                ),
                (
                    bool(self.label_fractions) and all(0 < f <= 1 for f in self.label_fractions),
                    f"label_fractions {list(self.label_fractions)}: each must lie in (0, 1]",
                ),
                *(
                    (
                        getattr(self, k) is None or getattr(self, k) > 0,
                        f"{k}: {getattr(self, k)} must be > 0",
                    )
                    for k in ("epochs", "batch_size", "lr")
                ),
            ]
        )
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

    def __post_init__(self) -> None:
        _check(
            [
                (self.tile is None or self.tile > 0, f"tile: {self.tile} px must be > 0"),
                (self.overlap is None or self.overlap >= 0, "overlap must be >= 0"),
            ],
        )


def _cron(value: str | None) -> bool:
    """Five space-separated fields (minute hour day month weekday); Dagster checks the rest."""
    return value is None or len(value.split()) == 5


@dataclass(frozen=True)
class AutomationSettings:
    """Dagster's declarative automation (``dagster dev`` / ``dagster-daemon run``): which
    sensors start on their own, how often they look, and the policies of the expensive steps.
    Every key optional; the defaults keep the sensors stopped until a user turns them on."""

    enabled: bool = False  # true: the archive and automation sensors start with the daemon
    archive_interval_seconds: int = 60  # how often the archive sensor looks for new products
    interval_seconds: int = 30  # how often the automation conditions are evaluated
    # when the index (and everything built from it) follows new curated scenes: "eager" (once
    # no curation is running) or a cron (e.g. "0 3 * * *": at most once a day)
    refresh: str = "eager"
    # retrain a trained checkpoint once the index holds this share more patches than it was
    # trained on (0.25: a quarter more); null: never because of growth
    retrain_min_new_share: float | None = 0.25
    retrain_cron: str | None = None  # also retrain on this cron if new patches arrived since
    gpu_pool_limit: int = 1  # steps in the "gpu" pool (pretraining, evaluations, maps) at once
    curate_pool_limit: int = 0  # curation steps at once; 0 = the number of CPU cores

    def __post_init__(self) -> None:
        _check(
            [
                (self.archive_interval_seconds >= 1, "archive_interval_seconds must be >= 1"),
                (self.interval_seconds >= 1, "interval_seconds must be >= 1"),
                (
                    self.refresh == "eager" or _cron(self.refresh),
                    f"refresh {self.refresh!r}: 'eager' or a cron of five fields "
                    "(e.g. '0 3 * * *')",
                ),
                (
                    self.retrain_min_new_share is None or self.retrain_min_new_share >= 0,
                    f"retrain_min_new_share: {self.retrain_min_new_share} must be >= 0 or null",
                ),
                (
                    _cron(self.retrain_cron),
                    f"retrain_cron {self.retrain_cron!r}: a cron of five fields or null",
                ),
                (self.gpu_pool_limit >= 1, "gpu_pool_limit must be >= 1"),
                (self.curate_pool_limit >= 0, "curate_pool_limit must be >= 0 (0 = CPU cores)"),
            ],
        )

    @property
    def curate_slots(self) -> int:
        """Curation steps at once (``curate_pool_limit``, 0 = the CPU cores)."""
        return self.curate_pool_limit or os.cpu_count() or 1


@dataclass(frozen=True)
class ValidateSettings:
    """The data-quality gates (``validate``; spectralearth.validation); every key optional.

    ``reference_stats``: the drift warning's reference (a folder with ``mu.npy`` and
    ``sigma.npy``, or a ``band_stats.json``), relative to params.yaml;
    ``$SPECTRALEARTH_REFERENCE_STATS`` wins. None: the curated folder's own statistics of an
    earlier run, if any.
    """

    reference_stats: Path | None = None
    max_band_drift_sigma: float = 0.25  # warn when a band mean is further off (reference stds)
    min_multitemporal_share: float = 0.1  # warn when fewer locations have more than one scene
    data_docs: bool = True  # record validations in a GX project and build its Data Docs

    def __post_init__(self) -> None:
        _check(
            [
                (
                    self.max_band_drift_sigma >= 0 and not math.isnan(self.max_band_drift_sigma),
                    f"max_band_drift_sigma: {self.max_band_drift_sigma} must be >= 0",
                ),
                (
                    _share(self.min_multitemporal_share),
                    f"min_multitemporal_share: {self.min_multitemporal_share} must lie in [0, 1]",
                ),
            ]
        )
        if self.reference_stats is not None and not isinstance(self.reference_stats, Path):
            if not isinstance(self.reference_stats, str) or not self.reference_stats:
                raise ParamsError(f"reference_stats: {self.reference_stats!r} is not a path")
            object.__setattr__(self, "reference_stats", Path(self.reference_stats))


@dataclass(frozen=True)
class MlflowSettings:
    experiment: str
    registered_model: str
    # None: the local SQLite store <data_dir>/mlflow/mlflow.db; env MLFLOW_TRACKING_URI wins
    tracking_uri: str | None = None
    # CPU, memory, disk, network (and GPU with nvidia-ml-py) sampled during pretraining,
    # logged as system/* metrics of the run every this many seconds; 0 = off
    system_metrics_interval: float = 10.0

    def __post_init__(self) -> None:
        _check(
            [
                (
                    self.system_metrics_interval >= 0,
                    f"system_metrics_interval: {self.system_metrics_interval} s must be >= 0",
                ),
                (
                    self.tracking_uri is None or self.tracking_uri.strip() != "",
                    "tracking_uri: empty; use null for the local store",
                ),
            ]
        )


@dataclass(frozen=True)
class TrackingSettings:
    """Where MLflow lives for this run: the resolved tracking URI, the artifact root of a
    local store, the experiment and the registered model name."""

    uri: str
    artifacts: Path | None
    experiment: str
    registered_model: str
    system_metrics_interval: float = 0.0  # seconds between samples during pretraining; 0 = off

    @property
    def local_db(self) -> Path | None:
        """The SQLite file of a local store (``sqlite:///...``), else None."""
        prefix = "sqlite:///"
        return Path(self.uri[len(prefix) :]) if self.uri.startswith(prefix) else None


@dataclass(frozen=True)
class Settings:
    params_file: Path
    layout: DataLayout
    synth: SynthSettings
    curate: CurateSettings
    pretrain: PretrainSettings
    evaluate: EvaluateSettings
    mlflow: MlflowSettings
    predict: PredictSettings = field(default_factory=PredictSettings)
    validate: ValidateSettings = field(default_factory=ValidateSettings)
    automation: AutomationSettings = field(default_factory=AutomationSettings)
    launch: LaunchSettings = field(default_factory=LaunchSettings)
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def tracking(self) -> TrackingSettings:
        """MLflow for this run: ``MLFLOW_TRACKING_URI`` > ``mlflow.tracking_uri`` > the local
        SQLite store under the data folder (with its artifact root beside it)."""
        uri = os.environ.get(MLFLOW_URI_ENV) or self.mlflow.tracking_uri
        artifacts = None
        if not uri:
            folder = self.layout.mlflow_dir.resolve()
            uri = f"sqlite:///{folder / 'mlflow.db'}"
            artifacts = folder / "artifacts"
        return TrackingSettings(
            uri=uri,
            artifacts=artifacts,
            experiment=self.mlflow.experiment,
            registered_model=self.mlflow.registered_model,
            system_metrics_interval=self.mlflow.system_metrics_interval,
        )

    def checkpoint_name(self) -> str:
        """The pipeline's own checkpoint folder name: ``<method>-<backbone>``."""
        return f"{self.pretrain.method}-{self.pretrain.backbone}"


def _validate_section(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """``reference_stats`` from the environment first, relative paths from params.yaml's folder."""
    values = dict(values)
    reference = os.environ.get(REFERENCE_ENV) or values.get("reference_stats")
    if isinstance(reference, str) and reference:
        path = Path(reference)
        values["reference_stats"] = path if path.is_absolute() else base / path
    return values


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
    data_dir: str | os.PathLike | None = None,
) -> Settings:
    """Read params.yaml into typed settings.

    ``overrides`` maps a section to keys to replace (the CLI and Dagster config use it; None
    values are ignored); ``profile`` picks a pretraining profile other than
    ``pretrain.profile``; ``data_dir`` wins over ``SPECTRALEARTH_DATA_DIR`` and the file's
    ``data_dir``. Raises :class:`ParamsError` naming the file for a value that cannot be used.
    """
    params_file = find_params_file(path).resolve()
    try:
        with open(params_file) as fh:
            raw = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{params_file}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{params_file}: expected a mapping of sections, got {type(raw).__name__}"
        )
    try:
        return _settings(params_file, raw, overrides or {}, profile, data_dir)
    except ParamsError as exc:
        raise ParamsError(f"{params_file}: {exc}") from None


def _settings(params_file: Path, raw: dict, overrides: dict, profile, data_dir) -> Settings:
    def section(name: str) -> dict[str, Any]:
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ParamsError(f"[{name}]: expected a mapping, got {values!r}")
        values = dict(values)
        values.update({k: v for k, v in (overrides.get(name) or {}).items() if v is not None})
        return values

    base = params_file.parent
    data = Path(data_dir or os.environ.get(DATA_DIR_ENV) or base / raw.get("data_dir", "data"))
    if os.environ.get(ARCHIVE_ENV):
        archive = Path(os.environ[ARCHIVE_ENV])
    elif raw.get("archive_dir"):
        archive = base / raw["archive_dir"]  # absolute paths stay as they are
    else:
        archive = data / "archive"

    pre = section("pretrain")
    chosen = profile or pre.get("profile")
    profiles = pre.get("profiles") or {}
    if chosen not in profiles:
        raise ParamsError(f"[pretrain]: unknown profile {chosen!r}; have {sorted(profiles)}")
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
        layout=DataLayout(data_dir=data, archive=archive),
        synth=_from_dict(SynthSettings, section("synth"), "synth"),
        curate=_from_dict(CurateSettings, section("curate"), "curate"),
        pretrain=_from_dict(PretrainSettings, pre_values, f"pretrain.profiles.{chosen}"),
        evaluate=_from_dict(EvaluateSettings, section("evaluate"), "evaluate"),
        mlflow=_from_dict(MlflowSettings, section("mlflow"), "mlflow"),
        predict=_from_dict(PredictSettings, section("predict"), "predict"),
        validate=_from_dict(
            ValidateSettings, _validate_section(section("validate"), base), "validate"
        ),
        automation=_from_dict(AutomationSettings, section("automation"), "automation"),
        launch=_from_dict(LaunchSettings, section("launch"), "launch"),
        raw=raw,
    )
