"""Daily: rerun the index, shards, statistics, pretraining and the downstream dataset when new
curated patches exist since the last evaluation (nothing runs on a day without new scenes);
the evaluation sensor (sensors.py) then reruns the evaluations that made stale."""

import dagster as dg

downstream_job = dg.define_asset_job(
    "refresh_downstream",
    # the unpartitioned assets before the evaluations (partitioned per checkpoint x task)
    selection=dg.AssetSelection.assets("patch_index").downstream()
    - dg.AssetSelection.assets("downstream_evaluation").downstream(),
)


def _last_time(instance: dg.DagsterInstance, key: str) -> float:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return event.timestamp if event is not None else 0.0


@dg.schedule(
    job=downstream_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def daily_refresh(context: dg.ScheduleEvaluationContext):
    curated = _last_time(context.instance, "curated_patches")
    evaluated = _last_time(context.instance, "downstream_evaluation")
    if curated == 0.0:
        return dg.SkipReason("no curated patches yet")
    if curated <= evaluated:
        return dg.SkipReason("no new curated patches since the last evaluation")
    return dg.RunRequest(run_key=f"refresh:{int(curated)}")
