"""New products in the archive -> one scene partition each, and a catalogue refresh.

The one sensor that is not declarative automation, because only a sensor can register
dynamic partitions as products arrive. It registers a partition per new product (the newest
processing of each datatake/tile; an older processing already registered stays and is marked
superseded in the catalogue) and requests one catalogue refresh; the automation conditions
(automation.py) then curate the new partitions once the refresh is done, and everything
downstream follows. A product that cannot even be opened never becomes a partition: the
sensor's log names it once (the cursor remembers it until the product changes) and, after
the refresh, the catalogue lists it as rejected. Each tick also gives the concurrency pools
their params.yaml limits if they have none (pools.py).

``build_archive_sensor(settings)`` makes it with params.yaml's interval and default status.
"""

from __future__ import annotations

import json

import dagster as dg

from dagster_project.jobs import ingest_job
from dagster_project.partitions import scenes_partitions
from dagster_project.pools import apply_limits
from dagster_project.resources import SpectralearthSettings
from spectralearth.config import AutomationSettings
from spectralearth.enmap.archive import find_scenes, newest_processings, scene_name
from spectralearth.enmap.scene import ProductError
from spectralearth.enmap.view import open_view


def _archive_tick(context: dg.SensorEvaluationContext, settings: SpectralearthSettings):
    s = settings.load()
    if set_limits := apply_limits(context.instance, s.automation):
        context.log.info(f"pool limits from params.yaml: {set_limits}")
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
            context.log.warning(f"not registering {name}: {exc}")
            rejected[name] = stamp
            continue
        rejected.pop(name, None)
        new.append(name)
    new_cursor = json.dumps({"rejected": rejected}, sort_keys=True)
    if not new:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no new products in {s.layout.archive}"), cursor=new_cursor
        )
    context.log.info(f"registering {len(new)} new product(s): {', '.join(new)}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(job_name=ingest_job.name, run_key="catalog:" + ",".join(new))],
        dynamic_partitions_requests=[scenes_partitions.build_add_request(new)],
        cursor=new_cursor,
    )


def build_archive_sensor(settings: AutomationSettings) -> dg.SensorDefinition:
    """The archive sensor, looking every ``archive_interval_seconds``; running from the start
    when ``automation.enabled``."""

    @dg.sensor(
        name="archive_sensor",
        jobs=[ingest_job],
        minimum_interval_seconds=settings.archive_interval_seconds,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if settings.enabled else dg.DefaultSensorStatus.STOPPED
        ),
        description="New products in the archive -> scene partitions + a catalogue refresh "
        "(curation and the rest follow by automation).",
    )
    def archive_sensor(context: dg.SensorEvaluationContext, settings: SpectralearthSettings):
        return _archive_tick(context, settings)

    return archive_sensor


archive_sensor = build_archive_sensor(AutomationSettings())
