"""Pretrain: self-supervised encoder, tracked and registered in MLflow."""

from pathlib import Path

import dagster as dg

from dagster_project.assets.curate import band_statistics, training_shards
from dagster_project.partitions import BASELINES, checkpoints_partitions
from dagster_project.resources import SpectralearthSettings
from spectralearth import pipeline


@dg.asset(
    group_name="pretrain",
    deps=[training_shards, band_statistics],
    description="Spectral adapter + backbone pretrained with the profile's SSL method (safetensors + run.json).",
)
def pretrained_checkpoint(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    s = settings.load()
    info = pipeline.pretrain(s)
    context.log.info(f"registered {info['model_name']} version {info['model_version']}")
    # the checkpoint (and the baselines it is compared with) become evaluation partitions
    names = [Path(info["checkpoint"]).name, *BASELINES]
    known = set(context.instance.get_dynamic_partitions(checkpoints_partitions.name))
    if new := [n for n in names if n not in known]:
        context.instance.add_dynamic_partitions(checkpoints_partitions.name, new)
    return dg.MaterializeResult(
        metadata={
            "method": info["method"],
            "backbone": info["backbone"],
            "profile": s.pretrain.profile,
            "steps": info["steps"],
            "final_loss": float(info["final_loss"]),
            "seconds": float(info["seconds"]),
            "mlflow_run_id": info["run_id"],
            "model_version": info["model_version"],
            "checkpoint": dg.MetadataValue.path(info["checkpoint"]),
        }
    )
