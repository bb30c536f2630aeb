"""Dagster's evaluation sensor, tick by tick on a test instance (no run is executed).

The sensor keeps no cursor: what it requests follows from the instance's materializations
(upstream assets newer than an evaluation, evaluations newer than the results table, scenes
without a map), and its run keys are stable while nothing changes, so the daemon does not
launch a requested run twice.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest

from dagster_project.partitions import (
    checkpoints_partitions,
    evaluation_partition,
    scenes_partitions,
)
from dagster_project.resources import SpectralearthSettings
from spectralearth.config import load_settings
from spectralearth.stages.evaluate import default_requests
from spectralearth.stages.maps import default_model
from tests.helpers import write_params


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    monkeypatch.delenv("SPECTRALEARTH_PARAMS", raising=False)
    params = write_params(tmp_path / "cfg")
    settings = load_settings(params)
    with dg.instance_for_test() as instance:
        yield instance, {"settings": SpectralearthSettings(params_file=str(params))}, settings


def _tick(instance, resources):
    from dagster_project.sensors import evaluation_sensor

    return evaluation_sensor(dg.build_sensor_context(instance=instance, resources=resources))


def _runs(result, job: str | None = None) -> list[dg.RunRequest]:
    if isinstance(result, dg.SkipReason):
        return []
    return [r for r in result if job is None or r.job_name == job]


def _materialize(instance, asset: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=partition)
    )


def test_new_checkpoint_evaluates_once_then_results_then_nothing(env):
    instance, resources, settings = env
    evaluations = [(r.model, r.dataset, r.protocol, r.head) for r in default_requests(settings)]
    checkpoints = sorted({c for c, *_ in evaluations})
    assert len(evaluations) >= 2  # the pipeline's checkpoint and a baseline

    # nothing pretrained yet: nothing to do
    assert isinstance(_tick(instance, resources), dg.SkipReason)

    # a checkpoint exists, but its evaluation partitions are not registered yet: still nothing
    _materialize(instance, "pretrained_checkpoint")
    assert isinstance(_tick(instance, resources), dg.SkipReason)

    # registered: one evaluation run per default evaluation, under its partition key
    instance.add_dynamic_partitions(checkpoints_partitions.name, checkpoints)
    first = _runs(_tick(instance, resources))
    keys = {str(evaluation_partition(*e)) for e in evaluations}
    assert {r.job_name for r in first} == {"evaluate"}
    assert {str(r.partition_key) for r in first} == keys and len(first) == len(keys)

    # the runs have not finished: the same requests with the same run keys (the daemon
    # drops a run key it has already launched, so nothing runs twice)
    again = _runs(_tick(instance, resources))
    assert sorted(r.run_key for r in again) == sorted(r.run_key for r in first)

    # one evaluation finished: only the other ones are still requested
    done = sorted(keys)[0]
    _materialize(instance, "downstream_evaluation", done)
    assert {str(r.partition_key) for r in _runs(_tick(instance, resources))} == keys - {done}

    # all finished: the results table is gathered (once per evaluation state)
    for key in keys - {done}:
        _materialize(instance, "downstream_evaluation", key)
    results = _runs(_tick(instance, resources))
    assert [r.job_name for r in results] == ["gather_results"]
    assert _runs(_tick(instance, resources))[0].run_key == results[0].run_key

    # results gathered: nothing new, nothing requested
    _materialize(instance, "benchmark_results")
    assert isinstance(_tick(instance, resources), dg.SkipReason)

    # a newer checkpoint (or dataset) makes every default evaluation stale again, with new
    # run keys (they carry the upstream time in seconds)
    time.sleep(1.1)
    _materialize(instance, "downstream_dataset")
    rerun = _runs(_tick(instance, resources), "evaluate")
    assert {str(r.partition_key) for r in rerun} == keys
    assert not {r.run_key for r in rerun} & {r.run_key for r in first}


def test_scenes_without_a_map_are_mapped_once_the_default_model_exists(env):
    instance, resources, settings = env
    instance.add_dynamic_partitions(scenes_partitions.name, ["scene_a", "scene_b"])
    # no trained model yet: no map runs
    assert isinstance(_tick(instance, resources), dg.SkipReason)

    model = default_model(settings)
    model.mkdir(parents=True)
    (model / "head.json").write_text("{}")
    maps = _runs(_tick(instance, resources))
    assert {r.job_name for r in maps} == {"map_scene"}
    assert sorted(r.partition_key for r in maps) == ["scene_a", "scene_b"]
    assert sorted(r.run_key for r in maps) == ["map:scene_a", "map:scene_b"]

    _materialize(instance, "scene_maps", "scene_a")
    assert [r.partition_key for r in _runs(_tick(instance, resources))] == ["scene_b"]
    _materialize(instance, "scene_maps", "scene_b")
    assert isinstance(_tick(instance, resources), dg.SkipReason)
