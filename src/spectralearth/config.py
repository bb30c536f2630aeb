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
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spectralearth.layout import DataLayout
from spectralearth.names import HEADS, PROTOCOLS

PARAMS_ENV = "SPECTRALEARTH_PARAMS"
DATA_DIR_ENV = "SPECTRALEARTH_DATA_DIR"
ARCHIVE_ENV = "SPECTRALEARTH_ARCHIVE"
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

    def __post_init__(self) -> None:
        shares = [
            (_share(getattr(self, k)), f"{k}: {getattr(self, k)} must lie in [0, 1]")
            for k in (
                "max_nodata_frac",
                "max_cloud_frac",
                "max_snow_frac",
                "max_haze_frac",
                "max_cloudshadow_frac",
                "max_cirrus_frac",
                "val_frac",
                "test_frac",
            )
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
            ],
        )


@dataclass(frozen=True)
class EvaluateSettings:
    task: str
    protocol: str
    epochs: int
    batch_size: int
    lr: float
    seed: int
    # Optional (defaults keep older params files loading):
    seeds: tuple[int, ...] = ()  # several seeds: the results table shows mean and std
    baselines: tuple[str, ...] = ("random_init",)  # beside each checkpoint (also random_forest)
    head: str = "linear"  # linear | fcn | upconv | paper (spectralearth.models.heads)
    label_fractions: tuple[float, ...] = (1.0,)  # shares of the train split, one result each

    def __post_init__(self) -> None:
        from spectralearth.names import BASELINES

        _check(
            [
                (
                    self.protocol in PROTOCOLS,
                    f"protocol {self.protocol!r} is not one of {PROTOCOLS}",
                ),
                (self.head in HEADS, f"head {self.head!r} is not one of {HEADS}"),
                (self.epochs > 0, f"epochs: {self.epochs} must be > 0"),
                (self.batch_size > 0, f"batch_size: {self.batch_size} must be > 0"),
                (self.lr > 0, f"lr: {self.lr} must be > 0"),
                (
                    all(b in BASELINES for b in self.baselines),
                    f"baselines {list(self.baselines)}: each must be one of {BASELINES}",
                ),
                (
                    bool(self.label_fractions) and all(0 < f <= 1 for f in self.label_fractions),
                    f"label_fractions {list(self.label_fractions)}: each must lie in (0, 1]",
                ),
            ],
        )


@dataclass(frozen=True)
class PredictSettings:
    """Scene maps (``spectralearth predict``); every key optional."""

    tile: int | None = None  # px; None = the patch size the model was trained on
    overlap: int | None = None  # px; None = a quarter tile
    mask_layers: tuple[str, ...] = ("QL_QUALITY_CLOUD",)  # QL layers masked besides nodata
    model: str | None = None  # trained model for the scene_maps asset; None = the default

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
class MlflowSettings:
    experiment: str
    registered_model: str
    # None: the local SQLite store <data_dir>/mlflow/mlflow.db; env MLFLOW_TRACKING_URI wins
    tracking_uri: str | None = None


@dataclass(frozen=True)
class TrackingSettings:
    """Where MLflow lives for this run: the resolved tracking URI, the artifact root of a
    local store, the experiment and the registered model name."""

    uri: str
    artifacts: Path | None
    experiment: str
    registered_model: str

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
    automation: AutomationSettings = field(default_factory=AutomationSettings)
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
        )

    def checkpoint_name(self) -> str:
        """The pipeline's own checkpoint folder name: ``<method>-<backbone>``."""
        return f"{self.pretrain.method}-{self.pretrain.backbone}"


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
        automation=_from_dict(AutomationSettings, section("automation"), "automation"),
        raw=raw,
    )
