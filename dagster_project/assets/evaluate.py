"""Evaluate: downstream dataset from the patches and label maps, then pretrained vs random init."""

import dagster as dg

from dagster_project.assets.curate import patch_index
from dagster_project.assets.pretrain import pretrained_checkpoint
from dagster_project.resources import SpectralearthSettings
from spectralearth import pipeline


@dg.asset(
    group_name="evaluate",
    deps=[patch_index],
    description="Synthetic land-cover segmentation task in the released-data layout.",
)
def downstream_dataset(settings: SpectralearthSettings) -> dg.MaterializeResult:
    s = settings.load()
    info = pipeline.downstream_dataset(s)
    flat = {k: v for k, v in info.items() if isinstance(v, (int, float, str))}
    return dg.MaterializeResult(metadata=flat)


@dg.asset(
    group_name="evaluate",
    deps=[pretrained_checkpoint, downstream_dataset],
    description="OA and macro F1: pretrained vs random-init encoder.",
)
def downstream_evaluation(settings: SpectralearthSettings) -> dg.MaterializeResult:
    s = settings.load()
    rows = pipeline.evaluate(s)
    return dg.MaterializeResult(
        metadata={
            **{f"{r.model}/{r.metric}": float(r.value) for r in rows.itertuples()},
            "table": dg.MetadataValue.md(pipeline.results_table(s).join(["```\n", "\n```"])),
        }
    )
