"""Daily rerun of the unpartitioned assets downstream of the patches (new scenes make them stale)."""

import dagster as dg

downstream_job = dg.define_asset_job(
    "refresh_downstream",
    selection=dg.AssetSelection.assets("patch_index").downstream(),
)

daily_refresh = dg.ScheduleDefinition(
    job=downstream_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.STOPPED
)
