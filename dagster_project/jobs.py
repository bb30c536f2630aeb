"""Jobs: what the archive sensor launches, and the refresh a user can launch by hand.

Everything else runs by declarative automation (automation.py) or from the asset graph in the
UI (select assets -> Materialize).
"""

import dagster as dg

# the catalogue refresh the archive sensor requests with each batch of new products
ingest_job = dg.define_asset_job(
    "ingest_new_scenes",
    selection=dg.AssetSelection.assets("scene_catalog"),
    description="Catalogue the archive again (new products become rows; rejected ones say why).",
)

# "refresh now": the index and every unpartitioned asset built from it, in one run; automation
# then follows with pretraining (by policy), the evaluations, the results and the maps. It
# holds no partitioned asset, so it needs no partition key (the former daily_refresh job
# selected the multi-partitioned pretraining asset and failed whenever it ran).
refresh_job = dg.define_asset_job(
    "refresh_downstream",
    selection=(
        dg.AssetSelection.assets("patch_index").downstream()
        - dg.AssetSelection.assets("pretrained_checkpoint").downstream()
        - dg.AssetSelection.assets("baseline_evaluation").downstream()
    ),
    description="Rebuild the index, statistics, summary and downstream "
    "dataset now (instead of waiting for automation.refresh's cron).",
)
