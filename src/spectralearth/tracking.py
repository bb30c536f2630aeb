"""MLflow: the tracking store, experiments, the model registry and lineage.

The only module that talks to MLflow. The store is :class:`~spectralearth.config.TrackingSettings`
(``MLFLOW_TRACKING_URI`` > ``mlflow.tracking_uri`` in params.yaml > the local SQLite store
``<data_dir>/mlflow/mlflow.db``; MLflow 3 refuses file stores, so a local store is always an
explicit ``sqlite:////abs/path`` with an explicit artifact location).
:func:`check_store` opens it before any work, so a damaged, foreign or unwritable store
fails a stage at its start, naming the file, not after hours of training.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from spectralearth.config import TrackingSettings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

LATEST_ALIAS = "latest-pretrained"
SQLITE_MAX_PATH = 4096  # longer paths fail inside sqlite's open() with no useful message


class TrackingStoreError(RuntimeError):
    """The MLflow store cannot be used (named in the message, with what to do)."""


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


def _check_remote(uri: str) -> None:
    import mlflow

    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # any transport or server error: say which server
        raise TrackingStoreError(f"MLflow tracking server {uri} did not answer: {exc}") from None


def configure(tracking: TrackingSettings) -> str:
    """Point MLflow at the store; create the experiment. Returns its id."""
    import mlflow

    if tracking.local_db is not None:
        tracking.local_db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking.uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(tracking.experiment)
    if exp is not None:
        return exp.experiment_id
    location = tracking.artifacts.as_uri() if tracking.artifacts is not None else None
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


def data_version(patches_root: Path) -> str:
    """The data a checkpoint was trained on, as DVC hashes it: the md5 of the patch index
    file plus that of the shard manifest (``index:<md5>,manifest:<md5>``)."""
    import hashlib

    from spectralearth.layout import CuratedLayout

    layout = CuratedLayout(patches_root)
    parts = []
    for label, path in (("index", layout.index), ("manifest", layout.manifest)):
        if path.is_file():
            parts.append(f"{label}:{hashlib.md5(path.read_bytes()).hexdigest()}")
    return ",".join(parts) or "unknown"


def _ensure_registered_model(client, name: str, description: str) -> None:
    import mlflow

    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description=description)


def log_pretraining(
    tracking: TrackingSettings,
    run_id: str,
    params: dict,
    metrics: dict,
    artifacts: list[tuple[str, Path]],
) -> str:
    """Params, final metrics and files (``(artifact folder, file)``; the checkpoint's go to
    ``checkpoint/``) of a pretraining run. Returns the artifact URI of ``checkpoint/``."""
    import mlflow

    configure(tracking)
    client = mlflow.MlflowClient()
    for key, value in params.items():
        client.log_param(run_id, key, str(value))
    for key, value in metrics.items():
        if value is not None:
            client.log_metric(run_id, key, float(value))
    for folder, path in artifacts:
        if Path(path).is_file():
            client.log_artifact(run_id, str(path), artifact_path=folder)
    return f"{client.get_run(run_id).info.artifact_uri}/checkpoint"


def register_checkpoint(
    tracking: TrackingSettings,
    run_id: str,
    source: str,
    method: str,
    backbone: str,
    lineage: dict,
    alias: str = LATEST_ALIAS,
) -> dict[str, int]:
    """A new version of ``spectralearth-<backbone>-<method>`` and of the umbrella
    ``tracking.registered_model`` with ``alias`` (default ``latest-pretrained``: the newest
    encoder pretrained here, of any kind), tagged with ``lineage``; ends the run. Returns
    ``{model name: version}``."""
    import mlflow

    configure(tracking)
    client = mlflow.MlflowClient()
    tags = {"method": method, "backbone": backbone, **{k: str(v) for k, v in lineage.items()}}
    for key, value in lineage.items():
        client.set_tag(run_id, key, str(value))
    arch_name = architecture_model_name(backbone, method)
    versions = {}
    for name, description in (
        (arch_name, f"{backbone} pretrained with {method} by spectralearth."),
        (
            tracking.registered_model,
            "Spectral-adapter encoders pretrained by spectralearth (safetensors + run.json).",
        ),
    ):
        _ensure_registered_model(client, name, description)
        version = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
        client.set_registered_model_alias(name, alias, version.version)
        versions[name] = int(version.version)
    client.set_terminated(run_id, "FINISHED")
    return versions


def registered_checkpoint(tracking: TrackingSettings, spec: str) -> Path:
    """The local checkpoint folder of a registered model version.

    ``spec`` is ``name`` (alias ``latest-pretrained``), ``name@alias`` or ``name/version``.
    """
    from urllib.parse import unquote, urlparse

    import mlflow

    configure(tracking)
    client = mlflow.MlflowClient()
    if "@" in spec:
        name, alias = spec.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in spec:
        name, number = spec.split("/", 1)
        version = client.get_model_version(name, number)
    else:
        version = client.get_model_version_by_alias(spec, LATEST_ALIAS)
    uri = client.get_model_version_download_uri(version.name, version.version)
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{spec}: checkpoint at {uri} is not on the local file system")
    return Path(unquote(parsed.path))


def fail_run(tracking: TrackingSettings, run_id: str) -> None:
    import mlflow

    configure(tracking)
    mlflow.MlflowClient().set_terminated(run_id, "FAILED")


def log_evaluation(
    tracking: TrackingSettings,
    rows,
    parent_run_id: str | None,
    csv_path: Path,
    run_name: str = "downstream-evaluation",
    tags: dict | None = None,
    artifacts: list[Path] = (),
) -> str:
    """One run per evaluation, metrics named <model>/<dataset>/<metric> (one step per row,
    so several seeds make a history), the CSV and ``artifacts`` (figures, the trained
    model's head.json) as artifacts."""
    import mlflow

    exp_id = configure(tracking)
    client = mlflow.MlflowClient()
    tags = {"stage": "evaluate", **(tags or {})}
    if parent_run_id:
        tags["pretrain_run_id"] = parent_run_id
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    steps: dict[str, int] = {}
    for r in rows.itertuples():
        key = f"{r.model}/{r.dataset}/{r.metric}"
        steps[key] = steps.get(key, -1) + 1
        client.log_metric(run.info.run_id, key, float(r.value), step=steps[key])
    client.log_artifact(run.info.run_id, str(csv_path))
    for path in artifacts:
        client.log_artifact(
            run.info.run_id,
            str(path),
            artifact_path="figures" if str(path).endswith(".png") else None,
        )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
