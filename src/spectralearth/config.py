"""Typed settings loaded from params.yaml, the one source of defaults, and data paths."""

from __future__ import annotations

import dataclasses
import os
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
    # an L2A product lacking QL layers: "refuse" it, or "ignore" (curate it with those
    # layers' filters off, logged and recorded in its scene report)
    missing_masks: str = "refuse"


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

    def __post_init__(self) -> None:
        # checked here so a typo in params.yaml fails at load, not after hours of pretraining
        for key, allowed in (("protocol", PROTOCOLS), ("head", HEADS)):
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"params.yaml [evaluate]: {key} {getattr(self, key)!r} is not one of {allowed}"
                )


@dataclass(frozen=True)
class PredictSettings:
    """Scene maps (``spectralearth predict``); every key optional."""

    tile: int | None = None  # px; None = the patch size the model was trained on
    overlap: int | None = None  # px; None = a quarter tile
    mask_layers: tuple[str, ...] = ("QL_QUALITY_CLOUD",)  # QL layers masked besides nodata
    model: str | None = None  # trained model for the scene_maps asset; None = the default


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
