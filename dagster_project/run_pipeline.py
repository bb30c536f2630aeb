"""Materialize the whole asset graph in-process (what `make run` does), recording every
materialization in $DAGSTER_HOME so the Dagster UI shows it afterwards.

Partitioned curation runs one partition per product, like the UI's backfill would; the
evaluations run their default partitions (the pipeline's checkpoint and the baselines on the
task under the default protocol and head, ``spectralearth.stages.evaluate.default_requests``),
then the results table, then one class map per scene. The concurrency pools get their
params.yaml limits first (pools.py), so the instance is ready for ``dagster dev``.
"""

from __future__ import annotations

import sys

import dagster as dg

from dagster_project.definitions import defs
from dagster_project.partitions import (
    evaluation_asset_name,
    evaluation_partition,
    pretrain_partition,
    scenes_partitions,
)
from dagster_project.pools import apply_limits
from spectralearth.config import load_settings
from spectralearth.stages.evaluate import default_requests


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


def _instance() -> dg.DagsterInstance:
    """$DAGSTER_HOME's instance; one line naming the folder when it cannot be used (unset,
    read-only, full) instead of Dagster's traceback."""
    import os

    home = os.environ.get("DAGSTER_HOME", "")
    try:
        return dg.DagsterInstance.get()
    except (OSError, dg.DagsterInvariantViolationError) as exc:
        raise SystemExit(
            f"dagster: cannot use DAGSTER_HOME {home or '(unset)'}: {exc}. Point DAGSTER_HOME "
            "at a writable folder (make run uses data/dagster_home)."
        ) from None


def main() -> int:
    instance = _instance()
    settings = load_settings()  # what the settings resource reads (params file, data dir)
    apply_limits(instance, settings.automation)
    _materialize(instance, ["scene_catalog"])
    keys = instance.get_dynamic_partitions(scenes_partitions.name)
    for i, key in enumerate(sorted(keys), 1):
        print(f"[dagster] curated_patches {i}/{len(keys)}: {key}", flush=True)
        _materialize(instance, ["curated_patches"], partition_key=key)
    # the unpartitioned assets before the evaluations: one run, ordered by dependencies
    graph = defs.resolve_asset_graph()
    after = (
        dg.AssetSelection.assets("downstream_evaluation", "baseline_evaluation")
        .downstream()
        .resolve(graph)
    )
    unpartitioned = [
        key for asset in defs.assets if asset.partitions_def is None for key in asset.keys
    ]
    before = sorted(
        k.to_user_string()
        for k in unpartitioned
        if k not in after and k.to_user_string() not in ("scene_catalog", "release_index")
    )  # release_index is for a downloaded release, materialized by hand
    # pretraining is partitioned by <method>-<backbone>: the params profile's pair runs here
    pretrain_key = pretrain_partition(settings.pretrain.method, settings.pretrain.backbone)
    print("[dagster] " + " -> ".join(before), flush=True)
    _materialize(instance, before)
    print(f"[dagster] pretrained_checkpoint {pretrain_key}", flush=True)
    _materialize(instance, ["pretrained_checkpoint"], partition_key=pretrain_key)
    # one run per default evaluation (checkpoint or baseline x dataset:protocol:head)
    evaluations = default_requests(settings)
    for i, r in enumerate(evaluations, 1):
        key = evaluation_partition(r.model, r.dataset, r.protocol, r.head)
        asset = evaluation_asset_name(r.model)
        print(f"[dagster] {asset} {i}/{len(evaluations)}: {key}", flush=True)
        _materialize(instance, [asset], partition_key=key)
    rest = sorted(k.to_user_string() for k in unpartitioned if k in after)
    print("[dagster] " + " -> ".join(rest), flush=True)
    _materialize(instance, rest)
    for i, key in enumerate(sorted(keys), 1):
        print(f"[dagster] scene_maps {i}/{len(keys)}: {key}", flush=True)
        _materialize(instance, ["scene_maps"], partition_key=key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
