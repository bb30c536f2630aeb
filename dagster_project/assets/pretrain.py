"""Pretrain: self-supervised encoders (method x backbone partitions), tracked and registered
in MLflow."""

from pathlib import Path

import dagster as dg

from dagster_project.assets.curate import band_statistics, training_shards
from dagster_project.metadata import png_markdown
from dagster_project.partitions import checkpoints_partitions, pretrain_partitions
from dagster_project.resources import SpectralearthSettings
from spectralearth import pipeline
from spectralearth.names import BASELINES


@dg.asset(
    group_name="pretrain",
    partitions_def=pretrain_partitions,
    deps=[training_shards, band_statistics],
    description="Spectral adapter + backbone pretrained with one SSL method on the profile's "
    "schedule (safetensors + run.json); one partition per method x backbone.",
)
def pretrained_checkpoint(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    key = context.partition_key.keys_by_dimension
    s = settings.load(pretrain={"method": key["method"], "backbone": key["backbone"]})
    info = pipeline.pretrain(s, dagster_run_id=context.run_id)
    context.log.info(
        f"registered {info['architecture_model_name']} v{info['architecture_model_version']} "
        f"and {info['model_name']} v{info['model_version']}"
    )
    # the checkpoint (and the baselines it is compared with) become evaluation partitions
    names = [Path(info["checkpoint"]).name, *BASELINES]
    known = set(context.instance.get_dynamic_partitions(checkpoints_partitions.name))
    if new := [n for n in names if n not in known]:
        context.instance.add_dynamic_partitions(checkpoints_partitions.name, new)
    loss_png = Path(info["checkpoint"]) / "loss.png"  # written by pipeline.pretrain
    return dg.MaterializeResult(
        metadata={
            "method": info["method"],
            "backbone": info["backbone"],
            "profile": s.pretrain.profile,
            "steps": info["steps"],
            "final_loss": float(info["final_loss"]),
            "seconds": float(info["seconds"]),
            "patches_per_second": float(info.get("patches_per_second") or 0.0),
            "parameters": int(info.get("parameters") or 0),
            "device": str(info.get("device", "")),
            "loss_curve": dg.MetadataValue.md(png_markdown(loss_png, "training loss")),
            "mlflow_run_id": info["run_id"],
            "registered_model": f"{info['architecture_model_name']} "
            f"v{info['architecture_model_version']}",
            "model_version": info["model_version"],
            "checkpoint": dg.MetadataValue.path(info["checkpoint"]),
        }
    )
