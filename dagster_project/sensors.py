"""New products in the archive -> one scene partition each -> curation runs.

The sensor registers a dynamic partition per new product (the newest processing of each
datatake/tile; an older processing already registered stays and is marked superseded in the
catalogue), requests one curation run per new partition, and one catalogue refresh. A product
that cannot even be opened never becomes a partition: it shows in the sensor's log and, after
the refresh, as a rejected row of the catalogue.
"""

from __future__ import annotations

import json

import dagster as dg

from dagster_project.partitions import scenes_partitions
from dagster_project.resources import SpectralearthSettings
from spectralearth.enmap.product import (
    ProductError,
    find_scenes,
    newest_processings,
    open_scene,
    scene_name,
)

ingest_job = dg.define_asset_job(
    "ingest_new_scenes", selection=dg.AssetSelection.assets("scene_catalog")
)
curate_job = dg.define_asset_job(
    "curate_scene",
    selection=dg.AssetSelection.assets("curated_patches"),
)


@dg.sensor(
    jobs=[ingest_job, curate_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def archive_sensor(context: dg.SensorEvaluationContext, settings: SpectralearthSettings):
    s = settings.load()
    if not s.paths.archive.is_dir():
        return dg.SkipReason(f"archive folder {s.paths.archive} does not exist")
    cursor = json.loads(context.cursor) if context.cursor else {"rejected": {}}
    known = set(context.instance.get_dynamic_partitions(scenes_partitions.name))
    new, rejected = [], dict(cursor["rejected"])
    for entry in newest_processings(find_scenes(s.paths.archive)):
        name = scene_name(entry)
        if name in known:
            continue
        stamp = str(entry.stat().st_mtime_ns)
        if rejected.get(name) == stamp:
            continue  # already reported, unchanged since
        try:
            open_scene(entry)
        except ProductError as exc:
            context.log.warning(f"not registering {exc}")
            rejected[name] = stamp
            continue
        rejected.pop(name, None)
        new.append(name)
    new_cursor = json.dumps({"rejected": rejected}, sort_keys=True)
    if not new:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no new products in {s.paths.archive}"), cursor=new_cursor
        )
    runs = [dg.RunRequest(job_name=ingest_job.name, run_key="catalog:" + ",".join(new))]
    runs += [
        dg.RunRequest(job_name=curate_job.name, partition_key=name, run_key=f"curate:{name}")
        for name in new
    ]
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[scenes_partitions.build_add_request(new)],
        cursor=new_cursor,
    )
