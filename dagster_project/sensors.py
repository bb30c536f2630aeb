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

from dagster_project.partitions import (
    checkpoints_partitions,
    evaluation_partition,
    scenes_partitions,
)
from dagster_project.resources import SpectralearthSettings
from spectralearth.enmap.archive import find_scenes, newest_processings, scene_name
from spectralearth.enmap.scene import ProductError
from spectralearth.enmap.view import open_view
from spectralearth.stages.evaluate import default_requests
from spectralearth.stages.maps import default_model

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
    if not s.layout.archive.is_dir():
        return dg.SkipReason(f"archive folder {s.layout.archive} does not exist")
    cursor = json.loads(context.cursor) if context.cursor else {"rejected": {}}
    known = set(context.instance.get_dynamic_partitions(scenes_partitions.name))
    new, rejected = [], dict(cursor["rejected"])
    for entry in newest_processings(find_scenes(s.layout.archive)):
        name = scene_name(entry)
        if name in known:
            continue
        stamp = str(entry.stat().st_mtime_ns)
        if rejected.get(name) == stamp:
            continue  # already reported, unchanged since
        try:
            open_view(entry, missing_masks=s.curate.missing_masks)
        except ProductError as exc:
            context.log.warning(f"not registering {exc}")
            rejected[name] = stamp
            continue
        rejected.pop(name, None)
        new.append(name)
    new_cursor = json.dumps({"rejected": rejected}, sort_keys=True)
    if not new:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no new products in {s.layout.archive}"), cursor=new_cursor
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


evaluate_job = dg.define_asset_job(
    "evaluate", selection=dg.AssetSelection.assets("downstream_evaluation")
)
results_job = dg.define_asset_job(
    "gather_results", selection=dg.AssetSelection.assets("benchmark_results")
)
map_job = dg.define_asset_job("map_scene", selection=dg.AssetSelection.assets("scene_maps"))


def _last(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> float:
    """Time of the latest materialization of ``asset`` (of one partition), 0 if none."""
    if partition is None:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        return event.timestamp if event is not None else 0.0
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
        limit=1,
    )
    return found.records[0].timestamp if found.records else 0.0


@dg.sensor(
    jobs=[evaluate_job, results_job, map_job],
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def evaluation_sensor(context: dg.SensorEvaluationContext, settings: SpectralearthSettings):
    """A new checkpoint or dataset -> the default evaluations (checkpoint and baselines on the
    task) again; finished evaluations -> the results table; scenes without a map -> their map
    (new scenes are mapped once with the default trained model)."""
    s = settings.load()
    instance = context.instance
    runs = []
    upstream = max(_last(instance, "pretrained_checkpoint"), _last(instance, "downstream_dataset"))
    known = set(instance.get_dynamic_partitions(checkpoints_partitions.name))
    for request in default_requests(s):
        checkpoint = request.model
        key = evaluation_partition(checkpoint, request.dataset, request.protocol, request.head)
        if upstream and checkpoint in known:
            if _last(instance, "downstream_evaluation", str(key)) < upstream:
                runs.append(
                    dg.RunRequest(
                        job_name=evaluate_job.name,
                        partition_key=key,
                        run_key=f"evaluate:{key}:{int(upstream)}",
                    )
                )
    evaluated = _last(instance, "downstream_evaluation")
    if not runs and evaluated > _last(instance, "benchmark_results"):
        runs.append(dg.RunRequest(job_name=results_job.name, run_key=f"results:{int(evaluated)}"))
    if (default_model(s) / "head.json").is_file():
        for scene in instance.get_dynamic_partitions(scenes_partitions.name):
            if not _last(instance, "scene_maps", scene):
                runs.append(
                    dg.RunRequest(
                        job_name=map_job.name, partition_key=scene, run_key=f"map:{scene}"
                    )
                )
    if not runs:
        return dg.SkipReason("evaluations, results and scene maps are up to date")
    return runs
