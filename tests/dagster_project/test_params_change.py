"""A parameter change on a data folder Dagster already filled (what ``dvc exp run -S
curate.max_cloud_frac=...`` does): the assets it shapes, and only those, are stale in the UI;
automation redoes exactly those partitions; an index built before they are redone fails its
blocking check with a run log that names the expectation, the offending patches and the
command that fixes it; once redone, everything is fresh again."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import yaml

from tests.helpers import write_params

PATCHES = ("scene_catalog", "curated_patches", "patch_index")


def _stale(defs, instance, asset: str, partition: str | None = None):
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    resolver = CachingStaleStatusResolver(
        instance, defs.resolve_asset_graph(), LoadingContextForTest(instance)
    )
    key = dg.AssetKey(asset)
    causes = [c.category.name for c in resolver.get_stale_causes(key, partition)]
    return resolver.get_status(key, partition).name, causes


def _materialize(defs, instance, selection, partition=None):
    return dg.materialize(
        list(defs.assets) + list(defs.asset_checks),
        instance=instance,
        resources=defs.resources,
        selection=selection,
        partition_key=partition,
        raise_on_error=False,
    )


def _tighter_cloud_threshold(index: pd.DataFrame) -> float:
    for t in sorted(index["cloud_frac"].unique(), reverse=True)[1:]:
        if (index["cloud_frac"] <= t).sum() < len(index):
            return float(t)
    pytest.skip("no cloudy patch in the tiny archive to filter out")


def test_a_curate_change_marks_exactly_its_partitions_stale_and_automation_redoes_them(
    archive_copy, tmp_path, monkeypatch
):
    from dagster_project.definitions import build_definitions

    monkeypatch.delenv("SPECTRALEARTH_PARAMS", raising=False)
    monkeypatch.setenv("SPECTRALEARTH_DATA_DIR", str(archive_copy.parent))
    params = write_params(tmp_path / "cfg")
    defs = build_definitions(params)

    def change(**curate):
        raw = yaml.safe_load(params.read_text())
        raw["curate"].update(curate)
        params.write_text(yaml.safe_dump(raw, sort_keys=False))
        return build_definitions(params)

    with dg.instance_for_test() as instance:
        assert _materialize(defs, instance, ["scene_catalog"]).success
        scenes = sorted(instance.get_dynamic_partitions("scenes"))
        for scene in scenes:
            assert _materialize(defs, instance, ["curated_patches"], scene).success
        assert _materialize(defs, instance, ["patch_index"]).success
        assert _stale(defs, instance, "curated_patches", scenes[0])[0] == "FRESH"
        assert _stale(defs, instance, "patch_index")[0] == "FRESH"
        cursor = dg.evaluate_automation_conditions(
            defs, instance, asset_selection=dg.AssetSelection.assets(*PATCHES)
        ).cursor

        # tighter clouds on the same data folder: curation's code version changes
        index = pd.read_parquet(archive_copy.parent / "patches" / "index.parquet")
        threshold = _tighter_cloud_threshold(index)
        tighter = change(max_cloud_frac=threshold)
        for scene in scenes:
            assert _stale(tighter, instance, "curated_patches", scene) == (
                "STALE",
                ["CODE"],
            )
        # (Dagster 1.13 marks a child stale once a parent is redone, not before)
        assert _stale(tighter, instance, "patch_index")[0] == "FRESH"
        assert _stale(tighter, instance, "scene_catalog")[0] == "FRESH"
        tick = dg.evaluate_automation_conditions(
            tighter, instance, asset_selection=dg.AssetSelection.assets(*PATCHES), cursor=cursor
        )
        requested = {
            k.to_user_string(): {str(p) for p in tick.get_requested_partitions(k)}
            for k in (dg.AssetKey(a) for a in PATCHES)
            if tick.get_requested_partitions(k)
        }
        assert requested == {"curated_patches": set(scenes)}  # every scene, nothing else

        # the index alone, before the scenes are redone: its blocking check fails and says why
        run = _materialize(tighter, instance, ["patch_index"])
        (check,) = [
            e.event_specific_data
            for e in run.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and e.event_specific_data.check_name == "patch_index_expectations"
        ]
        assert not check.passed
        offending = set(index.loc[index["cloud_frac"] > threshold, "patch_id"])
        named = check.metadata["offending_rows"].value
        (where,) = [k for k in named if "cloud_frac" in k]
        assert "expect_column_values_to_be_between" in where
        assert set(named[where]) <= offending and named[where]
        assert "curated_patches" in check.metadata["fix"].value
        logs = "\n".join(
            e.user_message for e in instance.all_logs(run.run_id) if e.level >= 40
        )  # errors
        assert "expect_column_values_to_be_between(cloud_frac)" in logs
        assert named[where][0] in logs
        assert "fix:" in logs and "dagster asset materialize" in logs

        tick = dg.evaluate_automation_conditions(  # the sensor's next tick: nothing new
            tighter,
            instance,
            asset_selection=dg.AssetSelection.assets(*PATCHES),
            cursor=tick.cursor,
        )
        assert tick.total_requested == 0

        # automation's requests executed: the scenes are fresh, the index is stale by them
        for scene in scenes:
            assert _materialize(tighter, instance, ["curated_patches"], scene).success
        assert _stale(tighter, instance, "curated_patches", scenes[0])[0] == "FRESH"
        assert _stale(tighter, instance, "patch_index") == ("STALE", ["DATA"] * len(scenes))
        tick = dg.evaluate_automation_conditions(
            tighter,
            instance,
            asset_selection=dg.AssetSelection.assets(*PATCHES),
            cursor=tick.cursor,
        )
        assert tick.get_requested_partitions(dg.AssetKey("patch_index")) == {None}
        assert _materialize(tighter, instance, ["patch_index"]).success  # its check passes
        assert _stale(tighter, instance, "patch_index")[0] == "FRESH"

        # a split share shapes the index only: the scenes stay fresh
        resplit = change(val_frac=0.3)
        assert _stale(resplit, instance, "curated_patches", scenes[0])[0] == "FRESH"
        assert _stale(resplit, instance, "patch_index") == ("STALE", ["CODE"])
