"""New products in the archive -> scene catalogue refresh -> curation of the new partitions."""

import dagster as dg

from dagster_project.partitions import scenes_partitions
from dagster_project.resources import SpectralearthSettings
from spectralearth.enmap.product import find_products

ingest_job = dg.define_asset_job(
    "ingest_new_scenes", selection=dg.AssetSelection.assets("scene_catalog")
)
curate_job = dg.define_asset_job(
    "curate_scene",
    selection=dg.AssetSelection.assets("curated_patches"),
    partitions_def=scenes_partitions,
)


@dg.sensor(
    job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED
)
def archive_sensor(context: dg.SensorEvaluationContext, settings: SpectralearthSettings):
    """Catalogue again when product folders appear that are not partitions yet."""
    s = settings.load()
    names = (
        sorted(p.name for p in find_products(s.paths.archive)) if s.paths.archive.is_dir() else []
    )
    known = set(context.instance.get_dynamic_partitions(scenes_partitions.name))
    new = [n for n in names if n not in known]
    if not new:
        return dg.SkipReason(f"no new products in {s.paths.archive}")
    return dg.RunRequest(run_key=",".join(new)[:500], tags={"new_products": str(len(new))})


@dg.sensor(
    job=curate_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED
)
def curate_new_partitions_sensor(context: dg.SensorEvaluationContext):
    """One curation run per scene partition not curated yet."""
    keys = context.instance.get_dynamic_partitions(scenes_partitions.name)
    done = set(context.cursor.split("\n")) if context.cursor else set()
    todo = [k for k in keys if k not in done]
    for k in todo:
        yield dg.RunRequest(run_key=k, partition_key=k)
    if todo:
        context.update_cursor("\n".join(sorted(done | set(todo))))
