"""The archive sensor, tick by tick on a test instance, and the runs it requests executed
there: each new product becomes one scene partition and the catalogue run it asks for
succeeds; a product that cannot be opened is reported once and never registered; a newer
processing of a datatake is registered beside the older one, which the catalogue marks
superseded. Curation itself is automation's (test_automation.py, test_journey.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from spectralearth.catalog import build_catalog
from tests.helpers import dagster_execute, dagster_failures, dagster_tick, write_params


def _products(archive: Path) -> list[Path]:
    return sorted(p for p in archive.iterdir() if p.is_dir())


@pytest.fixture
def env(archive_copy, tmp_path, monkeypatch):
    from dagster_project.definitions import build_definitions

    params = write_params(tmp_path / "cfg")
    monkeypatch.setenv("SPECTRALEARTH_DATA_DIR", str(archive_copy.parent))
    with dg.instance_for_test() as instance:
        yield instance, build_definitions(params), archive_copy


class Sensor:
    def __init__(self, defs, instance):
        self.defs, self.instance, self.cursor = defs, instance, None

    def tick(self):
        data = dagster_tick(self.defs, self.instance, "archive_sensor", self.cursor)
        self.cursor = data.cursor
        return data


def test_each_product_is_registered_once_and_the_catalogue_run_it_requests_succeeds(env):
    instance, defs, archive = env
    sensor = Sensor(defs, instance)
    names = sorted(p.name for p in _products(archive))
    first = sensor.tick()
    assert sorted(first.dynamic_partitions_requests[0].partition_keys) == names
    assert [r.job_name for r in first.run_requests] == ["ingest_new_scenes"]
    runs = dagster_execute(defs, instance, first.run_requests)
    assert not dagster_failures(runs)
    catalog = build_catalog(archive, None).catalog
    assert sorted(catalog.loc[catalog["status"] == "ok", "scene"]) == names
    assert instance.get_latest_materialization_event(dg.AssetKey("scene_catalog")) is not None

    second = sensor.tick()
    assert not second.run_requests and not second.dynamic_partitions_requests
    assert second.skip_message and str(archive) in second.skip_message
    assert sorted(instance.get_dynamic_partitions("scenes")) == names


def test_a_broken_product_is_reported_once_and_a_reprocessing_is_registered(env, capfd):
    instance, defs, archive = env
    sensor = Sensor(defs, instance)
    products = _products(archive)
    sensor.tick()
    newer = archive / (products[0].name[:-16] + "29991231T000000Z")
    shutil.copytree(products[0], newer)
    for f in newer.iterdir():
        f.rename(newer / f.name.replace(products[0].name, newer.name))
    broken = archive / (products[1].name[:-16] + "29991231T000000Z")
    broken.mkdir()
    result = sensor.tick()
    assert list(result.dynamic_partitions_requests[0].partition_keys) == [newer.name]
    assert products[0].name in instance.get_dynamic_partitions("scenes")  # kept, superseded
    assert broken.name not in instance.get_dynamic_partitions("scenes")
    assert not dagster_failures(dagster_execute(defs, instance, result.run_requests))
    again = sensor.tick()
    assert again.run_requests == [] and not again.dynamic_partitions_requests  # not retried
    assert broken.name not in instance.get_dynamic_partitions("scenes")
    logged = capfd.readouterr().err  # the sensor's log (Dagster's console logger)
    assert logged.count(f"not registering {broken.name}") == 1, logged[-3000:]  # once
    status = build_catalog(archive, None).catalog.set_index("scene")["status"]
    assert status[products[0].name] == "superseded" and status[newer.name] == "ok"


def test_the_sensor_gives_the_pools_their_params_limits_once(env):
    from dagster_project.pools import CURATE, GPU

    instance, defs, _ = env
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        pytest.skip("this test instance keeps no pool limits")
    Sensor(defs, instance).tick()
    limits = {p.name: p.limit for p in storage.get_pool_limits()}
    assert limits[GPU] == 1 and limits[CURATE] >= 1
    storage.set_concurrency_slots(GPU, 3)  # a user's own limit (UI / CLI) wins
    Sensor(defs, instance).tick()
    assert {p.name: p.limit for p in storage.get_pool_limits()}[GPU] == 3
