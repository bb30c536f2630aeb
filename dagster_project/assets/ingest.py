"""Ingest: the scene catalogue of the archive; registers one partition per ok product."""

import dagster as dg

from dagster_project.metadata import materialized
from dagster_project.partitions import scenes_partitions
from dagster_project.resources import SpectralearthSettings
from spectralearth.stages.ingest import catalog


@dg.asset(
    group_name="ingest",
    description="GeoParquet catalogue of the L2A archive (one row per product) + STAC.",
)
def scene_catalog(
    context: dg.AssetExecutionContext, settings: SpectralearthSettings
) -> dg.MaterializeResult:
    s = settings.load()
    result = catalog(s.layout.archive, s.layout.catalog, missing_masks=s.curate.missing_masks)
    known = set(context.instance.get_dynamic_partitions(scenes_partitions.name))
    if new := [k for k in result.ok if k not in known]:
        context.instance.add_dynamic_partitions(scenes_partitions.name, new)
    for scene, reason in result.rejected:
        context.log.warning(f"rejected product {scene}: {reason}")
    if not result.ok:
        context.log.warning(f"no readable product in {s.layout.archive}")
    return materialized(result, new_partitions=len(new))
