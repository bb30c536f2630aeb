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


def finish_pretraining(
    paths: Paths,
    settings: MlflowSettings,
    run_id: str,
    params: dict,
    run_info: dict,
    checkpoint_dir: Path,
) -> dict:
    """Log params, final metrics and the checkpoint; register it as a new model version."""
    import mlflow

    configure(paths, settings)
    client = mlflow.MlflowClient()
    for key, value in params.items():
        client.log_param(run_id, key, str(value))
    for key in ("final_loss", "seconds"):
        if run_info.get(key) is not None:
            client.log_metric(run_id, key, float(run_info[key]))
    for name in ("model.safetensors", "run.json"):
        client.log_artifact(run_id, str(Path(checkpoint_dir) / name), artifact_path="checkpoint")
    try:
        client.get_registered_model(settings.registered_model)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(
            settings.registered_model,
            description="Spectral-adapter encoders pretrained by spectralearth (safetensors + run.json).",
        )
    source = f"{client.get_run(run_id).info.artifact_uri}/checkpoint"
    version = client.create_model_version(
        settings.registered_model,
        source=source,
        run_id=run_id,
        tags={"method": str(run_info.get("method")), "backbone": str(run_info.get("backbone"))},
    )
    client.set_registered_model_alias(
        settings.registered_model, "latest-pretrained", version.version
    )
    client.set_terminated(run_id, "FINISHED")
    return {
        "run_id": run_id,
        "model_name": settings.registered_model,
        "model_version": int(version.version),
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
