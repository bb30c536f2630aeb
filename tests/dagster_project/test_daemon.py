"""The user's promise with a live ``dagster-daemon``: leave it running, drop a new EnMAP
product into the archive, and it flows to new patches, refreshed statistics and datasets,
evaluations and a scene map with no hand-work.

A scratch project on the tiny archive with the one-host instance template
(deploy/dagster.yaml) as its DAGSTER_HOME, fully materialized first by
``dagster_project.run_pipeline`` (the Dagster stage of ``make run``); then ``dagster-daemon run``
with both sensors on (``automation.enabled``, intervals of a few seconds from params.yaml);
a new product (no labels: a real new scene has none) and a broken one are copied in once both
sensors have ticked. Polling the instance (no fixed sleep, a generous deadline) until the new
scene's partition exists, its curation succeeded, the index holds its patches, the datasets,
the evaluations and the results were redone (pretraining was not: the policy's share of new
patches is not reached), every scene has a map made after the new head, and nothing runs any
more; then: no run failed, the broken product is remembered as rejected and never became a
partition, and the daemon stored the automation evaluations the UI shows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from tests.helpers import REPO, project_env, tiny_params

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
DEADLINE_S = 1500  # the flow takes minutes on a quiet 2-core machine; a loaded one is slower


def _sensor_states(instance) -> dict:
    from dagster._core.scheduler.instigation import InstigatorType

    return {s.name: s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)}


def _ticked(instance, name: str) -> int:
    state = _sensor_states(instance).get(name)
    if state is None:
        return 0
    return len(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5))


def _count(instance, asset: str, partition: str | None = None, after: float = 0.0) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset),
            asset_partitions=[partition] if partition else None,
            after_timestamp=after or None,
        ),
        limit=10_000,
    ).records
    return len(records)


def _busy(instance) -> bool:
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES), limit=1)
    backfills = instance.get_backfills(status=BulkActionStatus.REQUESTED, limit=1)
    return bool(runs) or bool(backfills)


def _stop(proc: subprocess.Popen) -> None:
    """The daemon and its code server and run workers: its own process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_a_dropped_product_flows_through_a_live_daemon(tmp_path):
    from spectralearth.synth import write_archive

    root = tmp_path / "project"
    data = root / "data"
    # three products (not the six of tiny_archive): each scene costs a curation and a map
    # run on every new head, and the journey is the same with three
    write_archive(
        data / "archive", data / "labels", scenes=3, size=128, seed=7, revisit_fraction=0.5
    )
    params = tiny_params(Path("data"))
    params["data_dir"] = "data"
    # the new scene adds over a quarter to three scenes' train split: the policy's share is
    # raised so this journey checks that no retraining follows (the share itself is
    # tested in test_automation.py)
    params["automation"].update(
        enabled=True, archive_interval_seconds=3, interval_seconds=3, retrain_min_new_share=2.0
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    home = data / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")  # the template
    env = project_env(root, home, OMP_NUM_THREADS="1")  # several run processes, 2 cores

    # 1. fully materialized first: what `make run` does in Dagster
    done = subprocess.run(
        [sys.executable, "-m", "dagster_project.run_pipeline"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (new,) = write_archive(
        tmp_path / "scratch" / "archive",
        tmp_path / "scratch" / "labels",
        scenes=1,
        size=128,
        seed=12,
        revisit_fraction=0,
    )
    broken_name = new.name.replace("DT0000004569", "DT0000099999")
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-m", "dagster_project.definitions"],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own process group: SIGTERM reaches its children too
    )
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            scenes = set(instance.get_dynamic_partitions("scenes"))
            before = {
                a: _count(instance, a)
                for a in ("pretrained_checkpoint", "downstream_evaluation", "baseline_evaluation")
            }
            deadline = time.monotonic() + DEADLINE_S
            # 2. automation on: both sensors have ticked (the automation sensor's first
            # evaluation is its baseline), then the new and the broken product land
            while not (_ticked(instance, "archive_sensor") and _ticked(instance, "automation")):
                assert daemon.poll() is None, "dagster-daemon exited"
                assert time.monotonic() < deadline, "the sensors never ticked"
                time.sleep(1)
            dropped = time.time()
            shutil.copytree(new, data / "archive" / new.name)
            broken = data / "archive" / broken_name
            broken.mkdir()
            (broken / f"{broken_name}-METADATA.XML").write_text("<not xml")

            # 3. poll until the scene has flowed through and nothing runs any more
            def flowed() -> bool:
                if new.name not in instance.get_dynamic_partitions("scenes"):
                    return False
                head = instance.get_latest_materialization_event(
                    dg.AssetKey("downstream_evaluation")
                )
                if head is None or head.timestamp < dropped:
                    return False
                mapped = all(
                    _count(instance, "scene_maps", s, after=head.timestamp)
                    for s in (*scenes, new.name)
                )
                return (
                    mapped
                    and _count(instance, "curated_patches", new.name) == 1
                    and _count(instance, "benchmark_results", after=head.timestamp) >= 1
                    and not _busy(instance)
                )

            while not flowed():
                assert daemon.poll() is None, "dagster-daemon exited"
                failed = instance.get_runs(
                    filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])
                )
                assert not failed, [r.run_id for r in failed]
                assert time.monotonic() < deadline, "the new scene did not flow in time"
                time.sleep(3)

            # 4. what it redid, and what it did not
            assert not instance.get_runs(
                filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])
            )
            index = pd.read_parquet(data / "patches" / "index.parquet")
            assert (index["product"] == new.name).sum() >= 1
            for asset in ("patch_index", "band_statistics", "downstream_dataset"):
                assert _count(instance, asset, after=dropped) >= 1, asset
            dataset = instance.get_latest_materialization_event(dg.AssetKey("downstream_dataset"))
            assert dataset.asset_materialization.metadata["scenes_without_labels"].value == 1
            assert _count(instance, "pretrained_checkpoint") == before["pretrained_checkpoint"]
            for asset in ("downstream_evaluation", "baseline_evaluation"):
                assert _count(instance, asset) > before[asset], asset
            assert (data / "maps" / f"{new.name}.tif").is_file()
            # the broken product: never a partition, remembered as rejected (reported once)
            assert broken_name not in instance.get_dynamic_partitions("scenes")
            state = _sensor_states(instance)["archive_sensor"]
            assert broken_name in json.loads(state.instigator_data.cursor)["rejected"]
            # the UI's "why": the daemon stored the automation evaluations of every asset
            for asset in ("curated_patches", "patch_index", "downstream_evaluation", "scene_maps"):
                records = instance.schedule_storage.get_auto_materialize_asset_evaluations(
                    dg.AssetKey(asset), limit=50
                )
                assert records, asset
            curated = instance.schedule_storage.get_auto_materialize_asset_evaluations(
                dg.AssetKey("curated_patches"), limit=50
            )
            launched = [r.get_evaluation_with_run_ids().run_ids for r in curated]
            assert any(launched)  # and the runs it launched for them
    finally:
        _stop(daemon)
        log.close()
    assert daemon.returncode is not None
