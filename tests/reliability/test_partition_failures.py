"""A product that breaks after it was registered fails only its own Dagster partition, with an
error naming it (what the UI shows), and the other partitions still materialize."""

from __future__ import annotations

import dagster as dg


def test_a_broken_product_fails_only_its_partition(env, archive_copy):  # noqa: F811
    from dagster_project.definitions import defs

    instance, resources, _ = env
    assets = list(defs.assets) + list(defs.asset_checks)
    assert dg.materialize(assets, instance=instance, resources=resources,
                          selection=["scene_catalog"]).success  # fmt: skip
    keys = sorted(instance.get_dynamic_partitions("scenes"))
    victim, other = keys[0], keys[1]
    tif = next((archive_copy / victim).glob("*SPECTRAL_IMAGE*"))
    tif.write_bytes(tif.read_bytes()[: tif.stat().st_size // 3])  # truncated after registration

    res = dg.materialize(assets, instance=instance, resources=resources,
                         selection=["curated_patches"], partition_key=victim,
                         raise_on_error=False)  # fmt: skip
    assert not res.success
    failure = next(e for e in res.all_events if e.is_step_failure)
    error, message = failure.step_failure_data.error, ""
    while error is not None:  # Dagster wraps the library's ProductError
        message, error = message + error.message, error.cause
    assert victim in message and ("cannot be" in message or "truncated" in message), message

    ok = dg.materialize(assets, instance=instance, resources=resources,
                        selection=["curated_patches"], partition_key=other)  # fmt: skip
    assert ok.success
    status = instance.get_status_by_partition(
        dg.AssetKey("curated_patches"), keys, defs.get_assets_def("curated_patches").partitions_def
    )
    assert status[victim] == dg.AssetPartitionStatus.FAILED
    assert status[other] == dg.AssetPartitionStatus.MATERIALIZED
