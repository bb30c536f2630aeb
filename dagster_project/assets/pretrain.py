"""Pretrain: self-supervised encoder, tracked and registered in MLflow."""

import dagster as dg

from dagster_project.assets.curate import band_statistics, training_shards
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
