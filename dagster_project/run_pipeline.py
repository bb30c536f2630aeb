"""Materialize the whole asset graph in-process (what `make run` does), recording every
materialization in $DAGSTER_HOME so the Dagster UI shows it afterwards.

Partitioned curation runs one partition per product, like the UI's backfill would.
"""

from __future__ import annotations

import sys

import dagster as dg

from dagster_project.definitions import defs
from dagster_project.partitions import scenes_partitions


def _materialize(instance, selection, partition_key=None) -> None:
    assets = list(defs.assets) + list(defs.asset_checks)
    res = dg.materialize(
        assets,
        instance=instance,
        resources=defs.resources,
        selection=selection,
        partition_key=partition_key,
        raise_on_error=False,
    )
    if not res.success:
        failed = [e for e in res.all_events if e.is_step_failure]
        reason = (
            failed[0].step_failure_data.error.message.strip().splitlines()[-1]
            if failed
            else "see the Dagster UI"
        )
        where = failed[0].step_key if failed else selection
        raise SystemExit(f"dagster: step '{where}' failed: {reason}")
    for ev in res.all_events:
        if ev.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        data = ev.event_specific_data
        if data.passed:
            continue
        if data.blocking and data.severity == dg.AssetCheckSeverity.ERROR:
            raise SystemExit(
                f"dagster: blocking check {data.check_name} failed; downstream assets not run"
            )
        summary = data.metadata.get("summary")
        print(
            f"[dagster] WARNING check {data.check_name}: {summary.value if summary else ''}",
            flush=True,
        )


def main() -> int:
    instance = dg.DagsterInstance.get()
    _materialize(instance, ["scene_catalog"])
    keys = instance.get_dynamic_partitions(scenes_partitions.name)
    for i, key in enumerate(sorted(keys), 1):
        print(f"[dagster] curated_patches {i}/{len(keys)}: {key}", flush=True)
        _materialize(instance, ["curated_patches"], partition_key=key)
    # every other asset is unpartitioned: one run, Dagster orders it by dependencies
    rest = sorted(
        key.to_user_string()
        for asset in defs.assets
        if asset.partitions_def is None
        for key in asset.keys
        if key.to_user_string() != "scene_catalog"
    )
    print("[dagster] " + " -> ".join(rest), flush=True)
    _materialize(instance, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
