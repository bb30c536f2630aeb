"""The "leave it running" journey in-process, tick by tick, executing every run the sensors
request (as the daemon would launch them) and checking each one succeeds.

On a tiny archive: the archive sensor registers the products and its catalogue run
succeeds; the automation sensor then builds the whole pipeline from nothing (curation, index,
training store, statistics, the pipeline's own checkpoint, the default evaluations, the
results table, one map per scene) and falls quiet; the ``refresh_downstream`` job runs; a new
product (without labels: a real new scene has none) and a broken one land in the archive:
the broken one is reported once and never registered, the new one is curated, the index
holds its patches, the downstream dataset leaves it out and counts it, the evaluations and
the results are redone, pretraining is not (the policy asks for a quarter more patches),
every scene is mapped again with the new head, and nothing failed. Every tick of the
automation sensor carries the per-asset evaluations the UI shows.

The same journey with a live ``dagster-daemon`` is test_daemon.py.
"""

from __future__ import annotations

import shutil

import dagster as dg
import pandas as pd
import pytest
import yaml

from tests.helpers import dagster_execute, dagster_failures, dagster_tick, write_params

pytestmark = pytest.mark.slow


class Daemon:
    """The two sensors' cursors, ticked by hand; every requested run executed at once."""

    def __init__(self, defs, instance):
        self.defs, self.instance = defs, instance
        self.cursors: dict[str, str | None] = {"archive_sensor": None, "automation": None}
        self.runs: list[tuple[str, object]] = []
        self.evaluated: set[str] = set()

    def tick(self, sensor: str):
        data = dagster_tick(self.defs, self.instance, sensor, self.cursors[sensor])
        self.cursors[sensor] = data.cursor
        for evaluation in data.automation_condition_evaluations or []:
            self.evaluated.add(evaluation.key.to_user_string())
        runs = dagster_execute(self.defs, self.instance, data.run_requests or [])
        self.runs += runs
        return data, runs

    def until_quiet(self, max_ticks: int = 25) -> list[str]:
        """Automation ticks until one requests nothing; what ran, in order."""
        done = []
        for _ in range(max_ticks):
            data, runs = self.tick("automation")
            if not data.run_requests:
                return done
            done += [what for what, _ in runs]
        raise AssertionError(f"automation still requesting after {max_ticks} ticks: {done[-10:]}")


def _materializations(instance, asset: str) -> int:
    return len(
        instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records  # all of them
    )


def _ran(done: list[str], asset: str) -> list[str]:
    return [w for w in done if asset in w.split("[")[0].split(",")]


def _new_product(scratch):
    """One new synthetic product (seed 12: one patch passes the tiny filters), written with
    its class map into a scratch folder: the project's labels never see it."""
    from spectralearth.synth import write_archive

    (product,) = write_archive(
        scratch / "archive", scratch / "labels", scenes=1, size=128, seed=12, revisit_fraction=0
    )
    return product


def test_a_new_scene_flows_through_automation_and_every_requested_run_succeeds(
    archive_copy, tmp_path, monkeypatch, one_torch_thread
):
    from dagster_project.definitions import build_definitions

    monkeypatch.delenv("SPECTRALEARTH_PARAMS", raising=False)
    monkeypatch.setenv("SPECTRALEARTH_DATA_DIR", str(archive_copy.parent))
    params = write_params(tmp_path / "cfg")
    settings_raw = yaml.safe_load(params.read_text())
    assert settings_raw["automation"]["retrain_min_new_share"] == 0.25  # the default policy
    defs = build_definitions(params)
    data_dir = archive_copy.parent

    with dg.instance_for_test() as instance:
        daemon = Daemon(defs, instance)
        # 1. the archive sensor registers every product; its catalogue run succeeds
        registered, runs = daemon.tick("archive_sensor")
        scenes = sorted(instance.get_dynamic_partitions("scenes"))
        assert len(scenes) == 6 and [w for w, _ in runs] == ["ingest_new_scenes[None]"]
        assert not dagster_failures(runs)

        # 2. automation builds everything from nothing, then falls quiet
        boot = daemon.until_quiet()
        assert not dagster_failures(daemon.runs), dagster_failures(daemon.runs)
        assert sorted(w.split("[")[1][:-1] for w in _ran(boot, "curated_patches")) == scenes
        assert len(_ran(boot, "pretrained_checkpoint")) == 1  # the pipeline's own, once
        assert len(_ran(boot, "scene_maps")) == len(scenes)
        results = pd.read_csv(data_dir / "results" / "evaluations.csv")
        assert set(results["model"]) == {"moco-spec_resnet18", "random_init"}, str(
            [w[:60] for w in boot]
        )
        assert daemon.until_quiet() == []  # nothing is due twice

        # 3. the refresh job a user launches by hand ("refresh now") succeeds
        job = defs.resolve_job_def("refresh_downstream")
        dg.validate_run_config(job, {})
        assert job.execute_in_process(instance=instance).success
        daemon.until_quiet()  # automation redoes what the refresh touched; nothing fails
        assert not dagster_failures(daemon.runs), dagster_failures(daemon.runs)
        before = {
            a: _materializations(instance, a)
            for a in ("pretrained_checkpoint", "downstream_evaluation", "baseline_evaluation")
        }

        # 4. a new product and a broken one land in the archive
        new = _new_product(tmp_path / "scratch")
        shutil.copytree(new, data_dir / "archive" / new.name)
        broken = data_dir / "archive" / new.name.replace("DT0000004569", "DT0000099999")
        broken.mkdir()
        (broken / f"{broken.name}-METADATA.XML").write_text("<not xml")
        assert not (data_dir / "labels" / f"{new.name}-CLASSMAP.TIF").exists()
        _, runs = daemon.tick("archive_sensor")
        assert not dagster_failures(runs)
        assert set(instance.get_dynamic_partitions("scenes")) == {*scenes, new.name}
        again, _ = daemon.tick("archive_sensor")
        assert not again.run_requests and broken.name not in instance.get_dynamic_partitions(
            "scenes"
        )  # reported, not registered, not retried

        # 5. it flows: curation, index, datasets, evaluations, results, maps; no pretraining
        flow = daemon.until_quiet()
        assert not dagster_failures(daemon.runs), dagster_failures(daemon.runs)
        assert {w.split("[")[1][:-1] for w in _ran(flow, "curated_patches")} == {new.name}
        index = pd.read_parquet(data_dir / "patches" / "index.parquet")
        assert (index["product"] == new.name).sum() >= 1
        for asset in ("patch_index", "band_statistics", "downstream_dataset", "benchmark_results"):
            assert _ran(flow, asset), (asset, flow)
        dataset = instance.get_latest_materialization_event(dg.AssetKey("downstream_dataset"))
        meta = dataset.asset_materialization.metadata
        assert meta["scenes_without_labels"].value == 1  # left out and counted, no error
        assert (
            _materializations(instance, "pretrained_checkpoint") == before["pretrained_checkpoint"]
        )  # one scene is not a quarter more patches: no new checkpoint
        for asset in ("downstream_evaluation", "baseline_evaluation"):
            assert _materializations(instance, asset) == before[asset] + 1, asset
        mapped = {w.split("[")[1][:-1] for w in _ran(flow, "scene_maps")}
        assert mapped == {*scenes, new.name}  # the new scene, and all after the new head
        assert (data_dir / "maps" / f"{new.name}.tif").is_file()

    # the UI's "why did or did not it run": every asset's condition was evaluated each tick
    assert daemon.evaluated == {
        k.to_user_string() for k in defs.resolve_asset_graph().materializable_asset_keys
    }
