"""MLflow: the tracking store, experiments, LoggedModels, the model registry and lineage.

The only module that talks to MLflow. The store is :class:`~spectralearth.config.TrackingSettings`
(``MLFLOW_TRACKING_URI`` > ``mlflow.tracking_uri`` in params.yaml > the local SQLite store
``<data_dir>/mlflow/mlflow.db``; MLflow 3 refuses file stores, so a local store is always an
explicit ``sqlite:////abs/path`` with an explicit artifact location). A tracking server
(``http://host:port``) keeps the artifacts itself: checkpoints are then downloaded from it.
:func:`check_store` opens it before any work, so a damaged, foreign or unwritable store
fails a stage at its start, naming the file or the server, not after hours of training.

What a pretraining run holds (MLflow 3):

- params and final metrics, logged in batches; the per-step loss (Lightning's logger);
  ``system/*`` metrics sampled while it trains (:func:`system_metrics`);
- the patch index and the shard manifest as ``mlflow.data`` inputs whose digest is the md5
  DVC records for the same file (:func:`curated_dataset`);
- the encoder as a LoggedModel (a pyfunc "model from code", :mod:`spectralearth.serving`:
  safetensors + run.json, signature and input example), registered from its ``models:/m-...``
  URI as a version of ``spectralearth-<backbone>-<method>`` and of the umbrella model, alias
  ``latest-pretrained`` moved to it.

An evaluation run has the downstream dataset (digest: DVC's directory md5) and the evaluated
LoggedModel as inputs; its test metrics are logged against both (``model_id``, ``dataset``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spectralearth.config import TrackingSettings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

LATEST_ALIAS = "latest-pretrained"
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"
REGISTRY_URI_ENV = "MLFLOW_REGISTRY_URI"
ENCODER_MODEL_NAME = "encoder"  # the LoggedModel's name within its run
MODELS_PREFIX = "models:/"


class TrackingStoreError(RuntimeError):
    """The MLflow store cannot be used (named in the message, with what to do)."""


class RegisteredModelError(LookupError):
    """A registered model spec that names no version (named in the message)."""


def check_store(tracking: TrackingSettings) -> None:
    """Raise :class:`TrackingStoreError` unless the store can be read and written.

    Local SQLite: the folder is writable, the path is short enough for SQLite, and the file
    is absent (created on first use) or a sound SQLite database that MLflow made (or an
    empty one). A remote store answers a search.
    """
    db = tracking.local_db
    if db is None:
        _check_remote(tracking.uri)
        return
    from spectralearth.io import SQLITE_MAX_PATH

    if len(str(db)) > SQLITE_MAX_PATH:
        raise TrackingStoreError(
            f"MLflow store path is {len(str(db))} characters, longer than SQLite accepts: {db}; "
            "move the data folder or set mlflow.tracking_uri / MLFLOW_TRACKING_URI"
        )
    folder = db.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingStoreError(
            f"cannot create the MLflow store folder {folder}: {exc.strerror or exc}"
        ) from None
    if not os.access(folder, os.W_OK):
        raise TrackingStoreError(
            f"the MLflow store folder {folder} is not writable; fix its permissions or set "
            "mlflow.tracking_uri / MLFLOW_TRACKING_URI"
        )
    if not db.exists() or db.stat().st_size == 0:
        return
    if not os.access(db, os.W_OK):
        raise TrackingStoreError(f"the MLflow store {db} is read-only; fix its permissions")
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            status = con.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise TrackingStoreError(
            f"the MLflow store {db} is not a readable SQLite database ({exc}); move it aside "
            "(a new store is created) or restore it from a backup"
        ) from None
    if status != "ok":
        raise TrackingStoreError(
            f"the MLflow store {db} is damaged (SQLite quick_check: {status}); move it aside "
            "(a new store is created) or restore it from a backup"
        )
    if tables and not {"experiments", "runs"} <= tables:
        raise TrackingStoreError(
            f"{db} is an SQLite database but not an MLflow store (tables: "
            f"{', '.join(sorted(tables)[:5])}); point mlflow.tracking_uri elsewhere"
        )


# A server that is down should fail a stage in seconds, not after MLflow's default retries
# (7, with backoff: minutes); the user's own settings of these win.
PROBE_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def _check_remote(uri: str) -> None:
    import mlflow

    saved = {k: os.environ.get(k) for k in PROBE_HTTP_ENV}
    os.environ.update({k: v for k, v in PROBE_HTTP_ENV.items() if saved[k] is None})
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # any transport or server error: say which server
        raise TrackingStoreError(
            f"MLflow tracking server {uri} did not answer: {exc}; start it or fix "
            "mlflow.tracking_uri / MLFLOW_TRACKING_URI"
        ) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


def artifact_root(tracking: TrackingSettings) -> Path | None:
    """Where a local store keeps artifacts: the configured folder, else ``artifacts/`` beside
    the SQLite file (never MLflow's default ``./mlruns`` under the current directory). None
    for a server, which has its own (``--artifacts-destination``)."""
    if tracking.artifacts is not None:
        return tracking.artifacts
    db = tracking.local_db
    return db.parent / "artifacts" if db is not None else None


def _set_uris(uri: str) -> None:
    """``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the process
    environment, which would make every later settings object of this process (another data
    folder, another Dagster deployment, a subprocess) log to this store: keep MLflow's own
    state, leave the environment as the user set it."""
    import mlflow

    before = {key: os.environ.get(key) for key in (MLFLOW_URI_ENV, REGISTRY_URI_ENV)}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def configure(tracking: TrackingSettings) -> str:
    """Point MLflow at the store; create the experiment. Returns its id."""
    import mlflow

    if tracking.local_db is not None:
        tracking.local_db.parent.mkdir(parents=True, exist_ok=True)
    _set_uris(tracking.uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(tracking.experiment)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root(tracking)
    location = root.as_uri() if root is not None else None
    return client.create_experiment(tracking.experiment, artifact_location=location)


def start_run(tracking: TrackingSettings, run_name: str, tags: dict | None = None) -> str:
    import mlflow

    exp_id = configure(tracking)
    run = mlflow.MlflowClient().create_run(exp_id, run_name=run_name, tags=tags or {})
    return run.info.run_id


def lightning_logger(tracking: TrackingSettings, run_id: str):
    """A Lightning MLFlowLogger that writes step metrics into an existing run."""
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(
        experiment_name=tracking.experiment, tracking_uri=tracking.uri, run_id=run_id
    )


@contextmanager
def system_metrics(tracking: TrackingSettings, run_id: str | None) -> Iterator[None]:
    """Sample CPU, memory, disk, network (and NVIDIA GPUs, with ``nvidia-ml-py``) into
    ``system/*`` metrics of ``run_id`` every ``tracking.system_metrics_interval`` seconds
    while the block runs (off when the interval is 0 or there is no run). On several nodes
    each node's rank 0 samples its own machine only where it owns the run (global rank 0)."""
    if run_id is None or tracking.system_metrics_interval <= 0:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id,
        sampling_interval=tracking.system_metrics_interval,
        tracking_uri=tracking.uri,
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def architecture_model_name(backbone: str, method: str) -> str:
    """The per-architecture registered model: ``spectralearth-<backbone>-<method>``."""
    return f"spectralearth-{backbone}-{method}".replace("_", "-")


def git_commit(repo: Path | None = None) -> str:
    """HEAD of the project's git checkout (``+dirty`` with uncommitted changes), or
    ``unknown`` outside a checkout."""
    import subprocess

    repo = repo or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


# --- content hashes: the ones DVC records ---------------------------------------------------


def file_md5(path: Path) -> str:
    """The md5 DVC 3 records for a file (of its bytes)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_md5(path: Path) -> str:
    """The md5 DVC records for ``path``: a file's bytes; for a folder, the md5 of its sorted
    ``[{"md5", "relpath"}]`` listing plus ``.dir`` (DVC's directory hash), so an MLflow
    dataset digest can be matched against a ``.dvc`` file or ``dvc.lock``. Bytecode caches
    are skipped as the project's ``.dvcignore`` skips them."""
    path = Path(path)
    if path.is_file():
        return file_md5(path)
    entries = sorted(
        (
            {"md5": file_md5(f), "relpath": f.relative_to(path).as_posix()}
            for f in path.rglob("*")
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
        ),
        key=lambda e: e["relpath"],
    )
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir"


def data_version(patches_root: Path) -> str:
    """The data a checkpoint was trained on, as DVC hashes it: the md5 of the patch index
    file plus that of the shard manifest (``index:<md5>,manifest:<md5>``)."""
    from spectralearth.layout import CuratedLayout

    layout = CuratedLayout(patches_root)
    parts = []
    for label, path in (("index", layout.index), ("manifest", layout.manifest)):
        if path.is_file():
            parts.append(f"{label}:{file_md5(path)}")
    return ",".join(parts) or "unknown"


# --- mlflow.data inputs ---------------------------------------------------------------------


def _arrow_to_mlflow(arrow_type):
    import pyarrow as pa
    from mlflow.types.schema import Array, DataType

    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return Array(_arrow_to_mlflow(arrow_type.value_type))
    for test, kind in (
        (pa.types.is_boolean, DataType.boolean),
        (pa.types.is_integer, DataType.long),
        (pa.types.is_floating, DataType.double),
        (pa.types.is_timestamp, DataType.datetime),
        (pa.types.is_binary, DataType.binary),
        (pa.types.is_large_binary, DataType.binary),
    ):
        if test(arrow_type):
            return kind
    return DataType.string


def _parquet_schema(path: Path):
    """The columns of a Parquet file as an MLflow schema (read from its footer only)."""
    import pyarrow.parquet as pq
    from mlflow.types import ColSpec, Schema

    arrow = pq.read_schema(path)
    return Schema([ColSpec(_arrow_to_mlflow(f.type), f.name) for f in arrow])


def _local_source(path: Path):
    """MLflow's ``local`` dataset source of ``path`` (its class is made at import time, once
    per URI scheme, so it is looked up, not imported)."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    local = next(s for s in get_registered_sources() if s._get_source_type() == "local")
    return local(str(Path(path).resolve()))


def _dataset(name: str, path: Path, digest: str, schema=None):
    from mlflow.data.meta_dataset import MetaDataset

    return MetaDataset(
        _local_source(path),
        name=name,
        digest=digest,
        schema=schema,
    )


def curated_dataset(patches_root: Path) -> list:
    """The patch index and the shard manifest of a curated folder as ``mlflow.data``
    datasets (digest: the file's md5, as DVC records it; schema: the Parquet columns)."""
    from spectralearth.layout import CuratedLayout

    layout = CuratedLayout(patches_root)
    out = []
    for name, path in (("patch_index", layout.index), ("shard_manifest", layout.manifest)):
        if path.is_file():
            out.append(_dataset(name, path, file_md5(path), _parquet_schema(path)))
    return out


def downstream_dataset(folder: Path):
    """A downstream dataset folder as an ``mlflow.data`` dataset named after it (digest:
    DVC's directory md5 of the folder: every image, label and split file)."""
    folder = Path(folder)
    return _dataset(folder.name, folder, dvc_md5(folder))


def _log_inputs(client, run_id: str, datasets: list, context: str, models=()) -> None:
    from mlflow.entities import DatasetInput, InputTag, LoggedModelInput
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = [
        DatasetInput(d._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
        for d in datasets
    ]
    client.log_inputs(run_id, datasets=inputs, models=[LoggedModelInput(m) for m in models])


# --- pretraining ----------------------------------------------------------------------------


def _batches(items: list, size: int = 500) -> Iterator[list]:
    """MLflow's log_batch takes at most 1000 metrics and 100 params per call."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def log_pretraining(
    tracking: TrackingSettings,
    run_id: str,
    params: dict,
    metrics: dict,
    artifacts: list[tuple[str, Path]],
    curated: Path | None = None,
) -> None:
    """Params and final metrics (in batches), files (``(artifact folder, file)``) and the
    curated folder's patch index and shard manifest as training inputs of a pretraining run."""
    import mlflow
    from mlflow.entities import Metric, Param

    configure(tracking)
    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    param_list = [Param(k, str(v)) for k, v in params.items()]
    for chunk in _batches(param_list, 100):
        client.log_batch(run_id, params=chunk)
    metric_list = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
    for chunk in _batches(metric_list):
        client.log_batch(run_id, metrics=chunk)
    for folder, path in artifacts:
        if Path(path).is_file():
            client.log_artifact(run_id, str(path), artifact_path=folder)
    if curated is not None:
        _log_inputs(client, run_id, curated_dataset(curated), "train")


def new_encoder_model(tracking: TrackingSettings, run_id: str, tags: dict) -> str:
    """A pending LoggedModel for ``run_id``'s encoder; returns its ``model_id`` (``m-...``),
    known before the files are logged so ``run.json`` can carry it."""
    import mlflow

    exp_id = configure(tracking)
    model = mlflow.initialize_logged_model(
        name=ENCODER_MODEL_NAME,
        source_run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        model_type="encoder",
        experiment_id=exp_id,
    )
    return model.model_id


def _pip_requirements() -> list[str]:
    """What loading the logged encoder needs (explicit: inference takes ~20 s per call).
    ``spectralearth`` is not on PyPI: install it from its checkout (docs/experiments.md)."""
    from importlib.metadata import PackageNotFoundError, version

    import spectralearth

    reqs = [f"spectralearth=={spectralearth.__version__}"]
    for package in ("mlflow", "torch", "timm", "safetensors", "numpy"):
        try:
            reqs.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            reqs.append(package)
    return reqs


@dataclass(frozen=True)
class Registration:
    """An encoder logged as a LoggedModel and registered: its id and URI, and the versions."""

    model_id: str
    model_uri: str  # models:/m-...
    versions: dict[str, int]


def register_checkpoint(
    tracking: TrackingSettings,
    run_id: str,
    model_id: str,
    checkpoint: Path,
    method: str,
    backbone: str,
    lineage: dict,
    checkpoint_name: str | None = None,
    alias: str = LATEST_ALIAS,
) -> Registration:
    """Log ``checkpoint`` (``model.safetensors`` + ``run.json``) into the LoggedModel
    ``model_id`` as a pyfunc model from code with signature and input example, register it
    from its ``models:/`` URI as a new version of ``spectralearth-<backbone>-<method>`` and of
    the umbrella ``tracking.registered_model`` (``alias``, default ``latest-pretrained``,
    moved to it on both; imports use ``latest-imported``), tagged with ``lineage`` and ``checkpoint`` (the folder name results go under);
    ends the run (FAILED if any of it fails)."""
    import mlflow

    from spectralearth.layout import CheckpointLayout
    from spectralearth.serving import encoder

    configure(tracking)
    client = mlflow.MlflowClient()
    layout = CheckpointLayout(checkpoint)
    run = json.loads(layout.run.read_text())
    tags = {"method": method, "backbone": backbone, **{k: str(v) for k, v in lineage.items()}}
    tags["checkpoint"] = checkpoint_name or layout.name  # the folder name evaluations use
    for key, value in lineage.items():
        client.set_tag(run_id, key, str(value))
    example = encoder.input_example(run)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        info = mlflow.pyfunc.log_model(
            name=ENCODER_MODEL_NAME,
            python_model=str(encoder.model_script()),
            artifacts={
                encoder.WEIGHTS_ARTIFACT: str(layout.weights),
                encoder.RUN_ARTIFACT: str(layout.run),
            },
            signature=encoder.signature(int(run.get("in_chans", 202)), _num_features(layout)),
            input_example=example,
            pip_requirements=_pip_requirements(),
            metadata={
                "method": method,
                "backbone": backbone,
                "in_chans": int(run.get("in_chans", 202)),
                "wavelengths_nm": list(run.get("wavelengths") or []),
                "input": "float32 [N, C, H, W] L2A reflectance as stored (scaled integers)",
                "output": "float32 [N, D] pooled encoder features",
            },
            model_id=model_id,
        )
        arch_name = architecture_model_name(backbone, method)
        versions = {}
        for name, description in (
            (arch_name, f"{backbone} pretrained with {method} by spectralearth."),
            (
                tracking.registered_model,
                "Spectral-adapter encoders pretrained by spectralearth (pyfunc: safetensors "
                "+ run.json; input float32 [N, C, H, W] reflectance, output [N, D]).",
            ),
        ):
            _ensure_registered_model(client, name, description)
            version = mlflow.register_model(info.model_uri, name, tags=tags)
            client.set_registered_model_alias(name, alias, version.version)
            versions[name] = int(version.version)
    return Registration(model_id=info.model_id, model_uri=info.model_uri, versions=versions)


def _num_features(layout) -> int:
    from spectralearth.models import load_pretrained

    return int(load_pretrained(layout.root).num_features)


def _ensure_registered_model(client, name: str, description: str) -> None:
    import mlflow

    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description=description)


def fail_run(tracking: TrackingSettings, run_id: str, model_id: str | None = None) -> None:
    """Mark the run FAILED, and its LoggedModel if it is still pending."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    configure(tracking)
    client = mlflow.MlflowClient()
    client.set_terminated(run_id, "FAILED")
    if model_id and client.get_logged_model(model_id).status == LoggedModelStatus.PENDING:
        client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)


# --- the registry -> a local checkpoint ------------------------------------------------------


def parse_registered(spec: str) -> tuple[str, str | None, str | None]:
    """``[models:/]NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` -> (name, alias, version);
    a bare name means the alias ``latest-pretrained``."""
    spec = spec.removeprefix(MODELS_PREFIX)
    if "@" in spec:
        name, alias = spec.split("@", 1)
        return name, alias, None
    if "/" in spec:
        name, number = spec.split("/", 1)
        return name, None, number
    return spec, LATEST_ALIAS, None


def version_model_id(version) -> str | None:
    """The LoggedModel a registered version was made from: its ``model_id`` where the
    registry keeps it, else the ``m-...`` of its ``models:/`` source (MLflow's SQL registry
    keeps only the source)."""
    if getattr(version, "model_id", None):
        return version.model_id
    source = version.source or ""
    if source.startswith(f"{MODELS_PREFIX}m-"):
        return source[len(MODELS_PREFIX) :].split("/", 1)[0]
    return None


def _plain(name: str | None) -> str | None:
    """``name`` if it is safe as one folder name (tags come from whoever wrote the store)."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        return None
    return name


@dataclass(frozen=True)
class RegisteredCheckpoint:
    """A registered version downloaded into a local checkpoint folder."""

    path: Path  # a CheckpointLayout root: model.safetensors + run.json
    name: str
    version: int
    model_id: str | None
    run_id: str | None


def registered_checkpoint(
    tracking: TrackingSettings, spec: str, cache: Path
) -> RegisteredCheckpoint:
    """The registered version ``spec`` (see :func:`parse_registered`) as a local checkpoint
    folder ``cache/<model id>/<method>-<backbone>``, downloaded from the artifact store
    (local or a tracking server's) once per LoggedModel and reused after: a version's files
    never change. Versions registered before LoggedModels (a run's ``checkpoint/`` folder)
    download the same way."""
    import mlflow

    from spectralearth.io import fsync_dirs
    from spectralearth.layout import CheckpointLayout

    configure(tracking)
    client = mlflow.MlflowClient()
    name, alias, number = parse_registered(spec)
    try:
        version = (
            client.get_model_version_by_alias(name, alias)
            if alias is not None
            else client.get_model_version(name, number)
        )
    except mlflow.exceptions.MlflowException as exc:
        what = f"alias {alias!r}" if alias is not None else f"version {number}"
        raise RegisteredModelError(
            f"registered model {spec!r}: no {what} of {name!r} in {tracking.uri} "
            f"({exc.message.splitlines()[0]})"
        ) from None
    model_id = version_model_id(version)
    key = _plain(model_id) or _plain(f"{name}-v{version.version}-{(version.run_id or '')[:12]}")
    folder = _plain(version.tags.get("checkpoint")) or _plain(
        f"{version.tags.get('method', 'encoder')}-{version.tags.get('backbone', 'model')}"
    )
    if key is None or folder is None:
        raise RegisteredModelError(
            f"registered model {spec!r} (version {version.version}): its id or checkpoint tag "
            f"is not a plain folder name ({key!r}, {version.tags.get('checkpoint')!r})"
        )
    target = CheckpointLayout(Path(cache) / key / folder)
    if not (target.weights.is_file() and target.run.is_file()):
        staging = Path(cache) / key / f".{folder}.download"
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=client.get_model_version_download_uri(name, version.version),
                dst_path=str(staging),
                tracking_uri=tracking.uri,
            )
        )
        found = {p.name: p for p in local.rglob("*") if p.is_file()}
        weights, run = found.get(target.weights.name), found.get(target.run.name)
        if weights is None or run is None:
            shutil.rmtree(staging, ignore_errors=True)
            raise RegisteredModelError(
                f"registered model {spec!r} (version {version.version}): its files lack "
                f"{target.weights.name} or {target.run.name}; not a spectralearth encoder"
            )
        target.root.mkdir(parents=True, exist_ok=True)
        os.replace(weights, target.weights)
        os.replace(run, target.run)  # last: run.json makes the folder a checkpoint
        fsync_dirs([target.root])
        shutil.rmtree(staging, ignore_errors=True)
    return RegisteredCheckpoint(
        path=target.root,
        name=name,
        version=int(version.version),
        model_id=model_id,
        run_id=version.run_id,
    )


# --- evaluation -----------------------------------------------------------------------------


def _logged_model_exists(client, model_id: str) -> bool:
    import mlflow

    try:
        client.get_logged_model(model_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def log_evaluation(
    tracking: TrackingSettings,
    rows,
    parent_run_id: str | None,
    csv_path: Path,
    run_name: str = "downstream-evaluation",
    tags: dict | None = None,
    artifacts: list[Path] = (),
    *,
    model_id: str | None = None,
    dataset_dir: Path | None = None,
) -> str:
    """One run per evaluation: the test metrics in batches, named ``<model>/<dataset>/<metric>``
    (one step per row, so several seeds make a history) and logged against the evaluated
    LoggedModel (``model_id``, when the checkpoint has one) and the downstream dataset
    (``dataset_dir``, logged as an input with DVC's md5); the CSV and ``artifacts`` (figures,
    the trained model's head.json) as artifacts."""
    import mlflow
    from mlflow.entities import Metric

    exp_id = configure(tracking)
    client = mlflow.MlflowClient()
    tags = {"stage": "evaluate", **(tags or {})}
    if parent_run_id:
        tags["pretrain_run_id"] = parent_run_id
    if model_id and not _logged_model_exists(client, model_id):
        tags["model_id_elsewhere"] = model_id  # trained against another store
        model_id = None
    if model_id:
        tags["model_id"] = model_id
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    dataset = downstream_dataset(dataset_dir) if dataset_dir is not None else None
    if dataset is not None or model_id:
        datasets = [dataset] if dataset is not None else []
        _log_inputs(client, run_id, datasets, "test", [model_id] if model_id else [])
    steps: dict[str, int] = {}
    now = int(time.time() * 1000)
    metrics = []
    for r in rows.itertuples():
        key = f"{r.model}/{r.dataset}/{r.metric}"
        steps[key] = steps.get(key, -1) + 1
        metrics.append(
            Metric(
                key,
                float(r.value),
                now,
                steps[key],
                model_id=model_id,
                dataset_name=dataset.name if dataset is not None else None,
                dataset_digest=dataset.digest if dataset is not None else None,
            )
        )
    for chunk in _batches(metrics):
        client.log_batch(run_id, metrics=chunk)
    client.log_artifact(run_id, str(csv_path))
    for path in artifacts:
        client.log_artifact(
            run_id,
            str(path),
            artifact_path="figures" if str(path).endswith(".png") else None,
        )
    client.set_terminated(run_id, "FINISHED")
    return run_id
