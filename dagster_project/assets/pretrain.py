"""Pretrain: self-supervised encoders (one ``<method>-<backbone>`` partition each), tracked
and registered in MLflow."""

import json

import dagster as dg

from dagster_project.assets.curate import band_statistics
from dagster_project.metadata import materialized
from dagster_project.partitions import pretrain_partitions, split_checkpoint_key
from dagster_project.pipes import launch_pretraining
from dagster_project.pools import GPU
from dagster_project.resources import SpectralearthSettings

# metadata: the train patches the checkpoint was trained on (the band statistics' count);
# the retraining policy compares it with the latest band statistics (automation.py)
TRAIN_PATCHES = "train_patches"


class PretrainConfig(dg.Config):
    """Launchpad options: ``resume`` continues a killed run from its last checkpoint (profiles
    with ``checkpoint_every_n_steps`` > 0 write one)."""

    resume: bool = False


@dg.asset(
    group_name="pretrain",
    partitions_def=pretrain_partitions,
    deps=[band_statistics],
    pool=GPU,
    description="Spectral adapter + backbone pretrained with one SSL method on the profile's "
    "schedule (safetensors + run.json); one partition per <method>-<backbone>.",
)
def pretrained_checkpoint(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings, config: PretrainConfig
) -> dg.MaterializeResult:
    method, backbone = split_checkpoint_key(context.partition_key)
    s = settings.load(pretrain={"method": method, "backbone": backbone})
    out = s.layout.checkpoint(s.checkpoint_name()).root
    stats = s.layout.curated.stats
    train_patches = json.loads(stats.read_text()).get("n_patches") if stats.is_file() else None
    # in this process, or torchrun through Dagster Pipes (params.yaml launch)
    result = launch_pretraining(context, s, out, resume=config.resume)
    context.log.info(result.summary())
    extra = {TRAIN_PATCHES: int(train_patches)} if train_patches is not None else {}
    return materialized(result, **extra)
