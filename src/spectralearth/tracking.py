"""MLflow: tracking store under the data folder (SQLite), experiments, registry, lineage.

The only module that talks to MLflow. MLflow 3 refuses file stores, so the URI is always an
explicit ``sqlite:////abs/path/mlflow.db`` with an explicit artifact location.
"""

from __future__ import annotations

import os
from pathlib import Path

from spectralearth.config import MlflowSettings, Paths

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def configure(paths: Paths, settings: MlflowSettings) -> str:
    """Point MLflow at the project's store; create the experiment. Returns its id."""
    import mlflow

    paths.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(paths.mlflow_uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(settings.experiment)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(
        settings.experiment, artifact_location=paths.mlflow_artifacts.as_uri()
    )


def start_run(
    paths: Paths, settings: MlflowSettings, run_name: str, tags: dict | None = None
) -> str:
    import mlflow

    exp_id = configure(paths, settings)
    run = mlflow.MlflowClient().create_run(exp_id, run_name=run_name, tags=tags or {})
    return run.info.run_id


def lightning_logger(paths: Paths, settings: MlflowSettings, run_id: str):
    """A Lightning MLFlowLogger that writes step metrics into an existing run."""
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(
        experiment_name=settings.experiment, tracking_uri=paths.mlflow_uri, run_id=run_id
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

    parts = []
    for label, path in (
        ("index", Path(patches_root) / "index.parquet"),
        ("manifest", Path(patches_root) / "shards" / "manifest.parquet"),
    ):
        if path.is_file():
            parts.append(f"{label}:{hashlib.md5(path.read_bytes()).hexdigest()}")
    return ",".join(parts) or "unknown"


def _ensure_registered_model(client, name: str, description: str) -> None:
    import mlflow

    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description=description)


def finish_pretraining(
    paths: Paths,
    settings: MlflowSettings,
    run_id: str,
    params: dict,
    run_info: dict,
    checkpoint_dir: Path,
    lineage: dict | None = None,
) -> dict:
    """Log params, final metrics and the checkpoint; register it as a new version of
    ``spectralearth-<backbone>-<method>`` and of the umbrella ``settings.registered_model``
    (alias ``latest-pretrained``: the newest encoder of any kind). ``lineage`` (data
    version, Dagster run id, git commit) goes on the run and on both versions as tags."""
    import mlflow

    configure(paths, settings)
    client = mlflow.MlflowClient()
    for key, value in params.items():
        client.log_param(run_id, key, str(value))
    for key in ("final_loss", "seconds", "patches_per_second", "parameters"):
        if run_info.get(key) is not None:
            client.log_metric(run_id, key, float(run_info[key]))
    for name in ("model.safetensors", "run.json"):
        client.log_artifact(run_id, str(Path(checkpoint_dir) / name), artifact_path="checkpoint")
    loss_plot = Path(checkpoint_dir) / "loss.png"
    if loss_plot.is_file():
        client.log_artifact(run_id, str(loss_plot), artifact_path="figures")
    tags = {
        "method": str(run_info.get("method")),
        "backbone": str(run_info.get("backbone")),
        **{k: str(v) for k, v in (lineage or {}).items()},
    }
    for key, value in (lineage or {}).items():
        client.set_tag(run_id, key, str(value))
    source = f"{client.get_run(run_id).info.artifact_uri}/checkpoint"
    arch_name = architecture_model_name(tags["backbone"], tags["method"])
    versions = {}
    for name, description in (
        (arch_name, f"{tags['backbone']} pretrained with {tags['method']} by spectralearth."),
        (
            settings.registered_model,
            "Spectral-adapter encoders pretrained by spectralearth (safetensors + run.json).",
        ),
    ):
        _ensure_registered_model(client, name, description)
        version = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
        client.set_registered_model_alias(name, "latest-pretrained", version.version)
        versions[name] = int(version.version)
    client.set_terminated(run_id, "FINISHED")
    return {
        "run_id": run_id,
        "model_name": settings.registered_model,
        "model_version": versions[settings.registered_model],
        "architecture_model_name": arch_name,
        "architecture_model_version": versions[arch_name],
    }


def registered_checkpoint(paths: Paths, settings: MlflowSettings, spec: str) -> Path:
    """The local checkpoint folder of a registered model version.

    ``spec`` is ``name`` (alias ``latest-pretrained``), ``name@alias`` or ``name/version``.
    """
    from urllib.parse import unquote, urlparse

    import mlflow

    configure(paths, settings)
    client = mlflow.MlflowClient()
    if "@" in spec:
        name, alias = spec.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in spec:
        name, number = spec.split("/", 1)
        version = client.get_model_version(name, number)
    else:
        version = client.get_model_version_by_alias(spec, "latest-pretrained")
    uri = client.get_model_version_download_uri(version.name, version.version)
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{spec}: checkpoint at {uri} is not on the local file system")
    return Path(unquote(parsed.path))


def fail_run(paths: Paths, settings: MlflowSettings, run_id: str) -> None:
    import mlflow

    configure(paths, settings)
    mlflow.MlflowClient().set_terminated(run_id, "FAILED")


def log_evaluation(
    paths: Paths,
    settings: MlflowSettings,
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

    exp_id = configure(paths, settings)
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
