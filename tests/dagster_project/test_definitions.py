"""The definitions as a user meets them in the UI: a labelled automation condition on every
asset, code versions made of the parameters that shape each asset, the pools of the heavy
steps, the partition mapping from a pretraining run to its own evaluations, and exactly the
jobs and sensors the journey tests execute."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from tests.helpers import write_params


@pytest.fixture
def params(tmp_path, monkeypatch):
    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    return write_params(tmp_path / "cfg")


def _defs(params):
    from dagster_project.definitions import build_definitions

    return build_definitions(params)


def _graph(params):
    return _defs(params).resolve_asset_graph()


def test_every_asset_has_a_labelled_condition_and_the_sensor_evaluates_them_all(params):
    from dagster_project.automation import SENSOR_NAME

    defs = _defs(params)
    graph = defs.resolve_asset_graph()
    keys = graph.materializable_asset_keys
    assert len(keys) == 12
    for key in keys:
        condition = graph.get(key).automation_condition
        assert condition is not None, key
        assert condition.get_label(), key  # the UI shows the label as the condition's name
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.asset_selection.resolve(graph) == keys


def test_sensors_follow_params_and_stay_stopped_by_default(params):
    defs = _defs(params)
    assert {s.name: s.default_status for s in defs.sensors} == {
        "archive_sensor": dg.DefaultSensorStatus.STOPPED,
        "automation": dg.DefaultSensorStatus.STOPPED,
    }
    raw = yaml.safe_load(params.read_text())
    raw["automation"].update(enabled=True, archive_interval_seconds=7, interval_seconds=9)
    params.write_text(yaml.safe_dump(raw))
    defs = _defs(params)
    by_name = {s.name: s for s in defs.sensors}
    assert {s.default_status for s in defs.sensors} == {dg.DefaultSensorStatus.RUNNING}
    assert by_name["archive_sensor"].minimum_interval_seconds == 7
    assert by_name["automation"].minimum_interval_seconds == 9


def test_the_definitions_hold_exactly_the_jobs_and_sensors_the_journeys_execute(params):
    """tests/dagster_project/test_journey.py executes every one of these; a new job, sensor or
    schedule must get its execution test there first."""
    defs = _defs(params)
    jobs = {j.name for j in defs.jobs if not j.name.startswith("__")}
    assert jobs == {"ingest_new_scenes", "refresh_downstream"}
    assert {s.name for s in defs.sensors} == {"archive_sensor", "automation"}
    assert not list(defs.schedules or [])


def test_refresh_job_holds_no_partitioned_asset(params):
    """The former daily_refresh job selected the multi-partitioned pretraining asset and
    failed whenever it ran without a partition key."""
    defs = _defs(params)
    job = defs.resolve_job_def("refresh_downstream")
    graph = defs.resolve_asset_graph()
    selected = job.asset_layer.selected_asset_keys
    assert {k.to_user_string() for k in selected} == {
        "patch_index",
        "band_statistics",
        "dataset_summary",
        "downstream_dataset",
    }
    assert all(graph.get(k).partitions_def is None for k in selected)


def test_heavy_steps_are_in_pools(params):
    from dagster_project.pools import CURATE, GPU

    graph = _graph(params)
    pools = {k.to_user_string(): graph.get(k).pools for k in graph.materializable_asset_keys}
    assert pools["curated_patches"] == {CURATE}
    for name in ("pretrained_checkpoint", "downstream_evaluation", "baseline_evaluation"):
        assert pools[name] == {GPU}, name
    assert pools["scene_maps"] == {GPU}
    assert pools["patch_index"] == set()


def test_a_pretraining_partition_maps_to_exactly_its_own_evaluations(params):
    from dagster_project.partitions import (
        EVALUATION_KEYS,
        checkpoint_to_evaluations,
        evaluations_partitions,
        pretrain_partition,
        pretrain_partitions,
    )

    key = pretrain_partition("moco", "spec_resnet18")
    upstream = pretrain_partitions.subset_with_partition_keys([key])
    down = checkpoint_to_evaluations.get_downstream_partitions_for_partitions(
        upstream, pretrain_partitions, evaluations_partitions
    ).get_partition_keys()
    down = sorted(map(str, down))
    assert len(down) == len(EVALUATION_KEYS) > 1
    assert all(k.startswith(f"{key}|") for k in down)
    # and back: an evaluation depends on its own checkpoint only
    (one,) = [k for k in evaluations_partitions.get_partition_keys() if str(k) == down[0]]
    up = checkpoint_to_evaluations.get_upstream_mapped_partitions_result_for_partitions(
        evaluations_partitions.subset_with_partition_keys([one]),
        evaluations_partitions,
        pretrain_partitions,
    ).partitions_subset.get_partition_keys()
    assert list(up) == [key]
    with pytest.raises(ValueError, match="no pretraining partition 'moco-resnet50'"):
        pretrain_partition("moco", "resnet50")  # no spectral adapter: not pretrained here


def test_scene_maps_follow_the_default_trained_head(params):
    graph = _graph(params)
    node = graph.get(dg.AssetKey("scene_maps"))
    assert {k.to_user_string() for k in node.parent_keys} == {
        "scene_catalog",
        "downstream_evaluation",
    }
    raw = yaml.safe_load(params.read_text())
    raw["predict"]["model"] = "some/fixed/model"  # a fixed model: maps follow new scenes only
    params.write_text(yaml.safe_dump(raw))
    node = _graph(params).get(dg.AssetKey("scene_maps"))
    assert {k.to_user_string() for k in node.parent_keys} == {"scene_catalog"}


@pytest.mark.parametrize(
    ("section", "key", "value", "changed"),
    [
        ("curate", "max_cloud_frac", 0.5, {"curated_patches"}),
        ("curate", "val_frac", 0.3, {"patch_index", "release_index"}),
        ("evaluate", "epochs", 3, {"downstream_evaluation", "baseline_evaluation"}),
        ("evaluate", "task", "enmap_potsdam", {"downstream_dataset"}),
        ("predict", "overlap", 4, {"scene_maps"}),
        ("automation", "interval_seconds", 5, set()),
    ],
)
def test_a_parameter_changes_the_code_version_of_exactly_the_assets_it_shapes(
    params, section, key, value, changed
):
    from dagster_project.versions import code_versions
    from spectralearth.config import load_settings

    before = code_versions(load_settings(params))
    raw = yaml.safe_load(params.read_text())
    raw[section][key] = value
    params.write_text(yaml.safe_dump(raw))
    after = code_versions(load_settings(params))
    assert {a for a in before if before[a] != after[a]} == changed
    graph = _graph(params)
    assert {
        k.to_user_string(): graph.get(k).code_version for k in graph.materializable_asset_keys
    } == after


def test_pretraining_code_version_follows_the_profile(params):
    from dagster_project.versions import code_versions
    from spectralearth.config import load_settings

    before = code_versions(load_settings(params))["pretrained_checkpoint"]
    raw = yaml.safe_load(params.read_text())
    raw["pretrain"]["profiles"]["cpu-tiny"]["methods"]["dino"]["lr"] = 0.5
    params.write_text(yaml.safe_dump(raw))
    assert code_versions(load_settings(params))["pretrained_checkpoint"] != before
    raw["pretrain"]["profiles"]["paper"]["steps"] = 7  # another profile: not this one's shape
    params.write_text(yaml.safe_dump(raw))
    after = code_versions(load_settings(params))["pretrained_checkpoint"]
    raw["pretrain"]["profiles"]["paper"]["steps"] = 0
    params.write_text(yaml.safe_dump(raw))
    assert code_versions(load_settings(params))["pretrained_checkpoint"] == after


def test_bad_automation_params_fail_at_load_naming_the_key(params):
    from spectralearth.config import ParamsError, load_settings

    raw = yaml.safe_load(params.read_text())
    raw["automation"]["refresh"] = "every day"
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"\[automation\].*refresh 'every day'"):
        load_settings(params)
    raw["automation"].update(refresh="eager", retrain_min_new_share=-1)
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="retrain_min_new_share"):
        load_settings(params)
