"""Pretrain: self-supervised encoders (method x backbone partitions), tracked and registered
in MLflow."""

import dagster as dg

from dagster_project.assets.curate import band_statistics, training_shards
from dagster_project.metadata import materialized
from dagster_project.partitions import checkpoints_partitions, pretrain_partitions
from dagster_project.pipes import launch_pretraining
from dagster_project.resources import SpectralearthSettings
from spectralearth.names import BASELINES


class PretrainConfig(dg.Config):
    """Launchpad options: ``resume`` continues a killed run from its last checkpoint (profiles
    with ``checkpoint_every_n_steps`` > 0 write one)."""

    resume: bool = False


@dg.asset(
    group_name="pretrain",
    partitions_def=pretrain_partitions,
    deps=[training_shards, band_statistics],
    description="Spectral adapter + backbone pretrained with one SSL method on the profile's "
    "schedule (safetensors + run.json); one partition per method x backbone.",
)
def pretrained_checkpoint(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings, config: PretrainConfig
) -> dg.MaterializeResult:
    key = context.partition_key.keys_by_dimension
    s = settings.load(pretrain={"method": key["method"], "backbone": key["backbone"]})
    out = s.layout.checkpoint(s.checkpoint_name()).root
    # in this process, or torchrun through Dagster Pipes (params.yaml launch)
    result = launch_pretraining(context, s, out, resume=config.resume)
    context.log.info(result.summary())
    # the checkpoint (and the baselines it is compared with) become evaluation partitions
    known = set(context.instance.get_dynamic_partitions(checkpoints_partitions.name))
    if new := [n for n in (out.name, *BASELINES) if n not in known]:
        context.instance.add_dynamic_partitions(checkpoints_partitions.name, new)
    return materialized(result)
