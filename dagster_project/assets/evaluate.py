"""Evaluate: the downstream dataset, one evaluation per checkpoint (or baseline) x dataset x
protocol x head, the gathered results table, and class maps of the scenes."""

import dagster as dg

from dagster_project.assets.curate import patch_index
from dagster_project.assets.ingest import scene_catalog
from dagster_project.assets.pretrain import pretrained_checkpoint
from dagster_project.metadata import materialized
from dagster_project.partitions import (
    BASELINE_DIMENSION,
    CHECKPOINT_DIMENSION,
    EVALUATION_DIMENSION,
    baseline_evaluations_partitions,
    checkpoint_to_evaluations,
    evaluations_partitions,
    scenes_partitions,
    split_evaluation_key,
)
from dagster_project.pools import GPU
from dagster_project.resources import SpectralearthSettings
from spectralearth import names
from spectralearth.stages import downstream, evaluate, maps


@dg.asset(
    group_name="evaluate",
    deps=[patch_index],
    description="Synthetic land-cover segmentation task in the released-data layout; scenes "
    "without a class map are left out and counted.",
)
def downstream_dataset(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    s = settings.load()
    result = downstream.downstream_dataset(
        s.layout.patches, s.layout.labels, s.layout.downstream / s.evaluate.task
    )
    context.log.info(result.summary())  # names the scenes without labels it left out
    return materialized(result)


def _evaluate(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings, model: str
) -> dg.MaterializeResult:
    """One evaluation partition: ``model`` (a checkpoint or a baseline) x ``<dataset>:<protocol>:
    <head>``; the forest runs under ``<dataset>:none:none`` only and the others need a
    protocol and a head (a partition outside that is recorded as skipped, not failed)."""
    s = settings.load()
    dataset, protocol, head = split_evaluation_key(
        context.partition_key.keys_by_dimension[EVALUATION_DIMENSION]
    )
    forest = model == names.RANDOM_FOREST
    if forest != (protocol == names.NO_PROTOCOL) or (protocol == names.NO_PROTOCOL) != (
        head == names.NO_HEAD
    ):
        reason = (
            f"{model} runs under {dataset}:{names.NO_PROTOCOL}:{names.NO_HEAD} only"
            if forest
            else f"{model} needs a protocol and a head (see {dataset}:frozen:linear)"
        )
        context.log.info(f"skipped: {reason}")
        return dg.MaterializeResult(metadata={"skipped": reason})
    request = evaluate.EvaluationRequest(
        model=model,
        dataset=dataset,
        protocol=protocol,
        head=head,
        label_fractions=s.evaluate.label_fractions,
        seeds=s.evaluate.seeds,
    )
    result = evaluate.evaluate(
        request,
        s.evaluate,
        s.layout,
        s.layout.results,
        s.tracking,
        default_backbone=s.pretrain.backbone,
    )
    return materialized(result)


@dg.asset(
    group_name="evaluate",
    partitions_def=evaluations_partitions,
    # pretraining partition moco-x feeds exactly the evaluations moco-x|* (partitions.py)
    deps=[
        dg.AssetDep(pretrained_checkpoint, partition_mapping=checkpoint_to_evaluations),
        downstream_dataset,
    ],
    pool=GPU,
    description="One pretrained checkpoint on one dataset under one protocol and head: "
    "test metrics (mean over seeds) per label fraction, confusion matrix, per-class scores, "
    "the trained model for scene maps.",
)
def downstream_evaluation(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    checkpoint = context.partition_key.keys_by_dimension[CHECKPOINT_DIMENSION]
    return _evaluate(context, settings, checkpoint)


@dg.asset(
    group_name="evaluate",
    partitions_def=baseline_evaluations_partitions,
    deps=[downstream_dataset],
    pool=GPU,
    description="A baseline (random init of the pipeline's backbone, the per-pixel random "
    "forest) on one dataset under one protocol and head, beside the checkpoints.",
)
def baseline_evaluation(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    baseline = context.partition_key.keys_by_dimension[BASELINE_DIMENSION]
    return _evaluate(context, settings, baseline)


@dg.asset(
    group_name="evaluate",
    deps=[downstream_evaluation, baseline_evaluation],
    description="Every finished evaluation in one table (CSV + Markdown), baselines side by "
    "side, mean ± std over seeds; wall time and peak memory per protocol.",
)
def benchmark_results(settings: SpectralearthSettings) -> dg.MaterializeResult:
    return materialized(evaluate.benchmark_results(settings.load().layout.results))


@dg.asset(
    group_name="evaluate",
    partitions_def=scenes_partitions,
    # definitions.py adds the trained head it maps with: the default evaluation partition
    # (params decide which), so a retrained head remaps every scene
    deps=[scene_catalog],
    pool=GPU,
    description="Class map of one scene (sliding-window inference with the default trained "
    "model), uint8 GeoTIFF in the scene's CRS with a colour table; nodata and cloud masked.",
)
def scene_maps(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    s = settings.load()
    scene = context.partition_key
    result = maps.map_scene(
        scene, s.layout.archive, s.layout.scene_map(scene), maps.default_model(s), s.predict
    )
    return materialized(result)
