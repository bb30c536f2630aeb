"""Declarative automation, tick by tick, on a test instance: what each asset's condition
requests after a given history (materializations and check results reported without runs,
so each case takes seconds). The runs themselves are executed in test_journey.py and, with
a live daemon, in test_daemon.py.

The policies under test (dagster_project/automation.py): scenes are curated once and not
again on a catalogue refresh; the index waits for running curations, for parents due on the
same tick and for failed blocking checks; pretraining follows the share of new train patches
(or a cron), not every scene; an evaluation follows its own checkpoint and its dataset's
data; the default evaluations are made when missing, others are not; the results table
waits for the evaluations due; maps follow new scenes and a new trained head.
"""

from __future__ import annotations

import datetime

import dagster as dg
import pytest
import yaml

from tests.helpers import write_params

TASK = "synth_landcover"
MOCO, DINO = "moco-spec_resnet18", "dino-spec_resnet18"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """(instance, defs factory): ``defs(**automation)`` builds the definitions from tiny
    params with those automation keys."""
    from dagster_project.definitions import build_definitions

    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    monkeypatch.delenv("SPECTRALEARTH_PARAMS", raising=False)
    params = write_params(tmp_path / "cfg")

    def defs(**automation):
        raw = yaml.safe_load(params.read_text())
        raw["automation"].update(automation)
        params.write_text(yaml.safe_dump(raw, sort_keys=False))
        return build_definitions(params)

    with dg.instance_for_test() as instance:
        yield instance, defs


class Ticks:
    """Successive evaluations of the automation conditions (one cursor, like the sensor)."""

    def __init__(self, defs, instance, *assets: str):
        self.defs, self.instance, self.cursor = defs, instance, None
        self.selection = dg.AssetSelection.assets(*assets) if assets else None

    def __call__(self, when: datetime.datetime | None = None) -> dict[str, set[str]]:
        result = dg.evaluate_automation_conditions(
            self.defs,
            self.instance,
            asset_selection=self.selection,
            cursor=self.cursor,
            evaluation_time=when,
        )
        self.cursor = result.cursor
        requested: dict[str, set[str]] = {}
        for r in result.results:
            keys = result.get_requested_partitions(r.key)
            if keys:
                requested[r.key.to_user_string()] = {str(k) for k in keys}
        return requested


def _made(instance, asset: str, partition: str | None = None, **metadata) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=partition, metadata=metadata)
    )


def _curated(instance, scene: str, passed: bool = True) -> None:
    """A scene's curation and its blocking check on it, as a run records them (once per
    scene: Dagster stores one run-less check result per partition)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData as Target,
    )

    _made(instance, "curated_patches", scene)
    (mat,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("curated_patches"), asset_partitions=[scene]),
        limit=1,
    ).records
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("curated_patches"),
            check_name="scene_patches_expectations",
            passed=passed,
            partition=scene,
            target_materialization_data=Target(
                storage_id=mat.storage_id, run_id=mat.run_id, timestamp=mat.timestamp
            ),
        )
    )


def _eval(checkpoint: str, key: str = f"{TASK}:frozen:linear") -> str:
    return f"{checkpoint}|{key}"


# --- curation and the index ----------------------------------------------------------------


def test_new_scenes_are_curated_once_and_a_catalogue_refresh_curates_nothing(env):
    instance, defs = env
    tick = Ticks(defs(), instance, "curated_patches")
    _made(instance, "scene_catalog")
    instance.add_dynamic_partitions("scenes", ["s1", "s2"])
    assert tick() == {"curated_patches": {"s1", "s2"}}
    _made(instance, "curated_patches", "s1")
    _made(instance, "curated_patches", "s2")
    assert tick() == {}
    _made(instance, "scene_catalog")  # a refresh for another product: s1, s2 stay as they are
    instance.add_dynamic_partitions("scenes", ["s3"])
    assert tick() == {"curated_patches": {"s3"}}


def test_the_index_waits_for_curations_due_and_for_a_failed_scene_check(env):
    instance, defs = env
    tick = Ticks(defs(), instance, "curated_patches", "patch_index")
    _made(instance, "scene_catalog")
    instance.add_dynamic_partitions("scenes", ["s1", "s2"])
    assert tick() == {"curated_patches": {"s1", "s2"}}  # not the index: its parents are due
    _curated(instance, "s1")
    _curated(instance, "s2")
    assert tick() == {"patch_index": {"None"}}
    _made(instance, "patch_index")
    assert tick() == {}

    instance.add_dynamic_partitions("scenes", ["s3"])
    assert tick() == {"curated_patches": {"s3"}}
    _curated(instance, "s3", passed=False)
    assert tick() == {}  # a bad scene never reaches the index ...
    instance.add_dynamic_partitions("scenes", ["s4"])
    assert tick() == {"curated_patches": {"s4"}}
    _curated(instance, "s4")
    assert tick() == {}  # ... nor does a good one while the bad one is in it


def test_a_refresh_cron_batches_new_scenes_into_one_index_per_tick(env):
    instance, defs = env
    tick = Ticks(defs(refresh="0 3 * * *"), instance, "patch_index")
    day = datetime.datetime(2030, 5, 1, 12, tzinfo=datetime.UTC)
    _made(instance, "scene_catalog")
    instance.add_dynamic_partitions("scenes", ["s1", "s2"])
    _curated(instance, "s1")
    _made(instance, "patch_index")
    assert tick(day) == {}
    _curated(instance, "s2")  # new patches during the day
    assert tick(day + datetime.timedelta(hours=2)) == {}  # no 03:00 tick yet
    assert tick(day + datetime.timedelta(hours=15, minutes=1)) == {"patch_index": {"None"}}
    _made(instance, "patch_index")
    assert tick(day + datetime.timedelta(days=1, hours=15, minutes=1)) == {}  # nothing new


# --- pretraining policy --------------------------------------------------------------------


def _trained_store(instance, train_patches: int) -> None:
    _made(instance, "band_statistics", n_patches=train_patches)


def test_the_pipelines_own_checkpoint_is_trained_when_missing_and_no_other(env):
    instance, defs = env
    tick = Ticks(defs(), instance, "pretrained_checkpoint")
    _trained_store(instance, 100)
    assert tick() == {"pretrained_checkpoint": {MOCO}}


def test_retraining_follows_the_share_of_new_train_patches_not_every_scene(env):
    instance, defs = env
    tick = Ticks(defs(retrain_min_new_share=0.25), instance, "pretrained_checkpoint")
    _trained_store(instance, 100)
    _made(instance, "pretrained_checkpoint", MOCO, train_patches=100)
    _made(instance, "pretrained_checkpoint", DINO, train_patches=70)  # trained on less
    assert tick() == {"pretrained_checkpoint": {DINO}}  # 100 is 43% more than 70
    _made(instance, "pretrained_checkpoint", DINO, train_patches=100)
    assert tick() == {}
    _made(instance, "band_statistics", n_patches=124)  # a few new scenes: 24% more
    assert tick() == {}
    _made(instance, "band_statistics", n_patches=125)
    assert tick() == {"pretrained_checkpoint": {MOCO, DINO}}


def test_retraining_can_follow_a_cron_when_new_patches_arrived(env):
    instance, defs = env
    tick = Ticks(
        defs(retrain_min_new_share=None, retrain_cron="0 2 * * 0"),  # Sundays 02:00
        instance,
        "pretrained_checkpoint",
    )
    saturday = datetime.datetime(2030, 5, 4, 12, tzinfo=datetime.UTC)
    _trained_store(instance, 100)
    _made(instance, "pretrained_checkpoint", MOCO, train_patches=100)
    assert tick(saturday) == {}
    _made(instance, "band_statistics", n_patches=101)  # one new patch
    assert tick(saturday + datetime.timedelta(hours=1)) == {}  # waits for the cron
    assert tick(saturday + datetime.timedelta(hours=15)) == {"pretrained_checkpoint": {MOCO}}
    _made(instance, "pretrained_checkpoint", MOCO, train_patches=101)
    week = saturday + datetime.timedelta(days=7, hours=15)
    assert tick(week) == {}  # a cron tick without new patches: nothing


# --- evaluations, results, maps ------------------------------------------------------------


def _evaluated_world(instance):
    _trained_store(instance, 100)
    _made(instance, "downstream_dataset")
    for ckpt in (MOCO, DINO):
        _made(instance, "pretrained_checkpoint", ckpt, train_patches=100)
        _made(instance, "downstream_evaluation", _eval(ckpt))
    _made(instance, "downstream_evaluation", _eval(MOCO, f"{TASK}:full:fcn"))  # a user's own
    _made(instance, "downstream_evaluation", _eval(MOCO, "enmap_potsdam:frozen:linear"))
    _made(instance, "baseline_evaluation", _eval("random_init"))
    _made(instance, "benchmark_results")


EVALUATIONS = ("downstream_evaluation", "baseline_evaluation")


def test_a_new_checkpoint_reevaluates_its_own_evaluations_and_new_data_those_on_it(env):
    instance, defs = env
    _evaluated_world(instance)
    tick = Ticks(defs(), instance, *EVALUATIONS)
    assert tick() == {}
    _made(instance, "pretrained_checkpoint", MOCO, train_patches=130)  # moco retrained
    assert tick() == {
        "downstream_evaluation": {
            _eval(MOCO),
            _eval(MOCO, f"{TASK}:full:fcn"),
            _eval(MOCO, "enmap_potsdam:frozen:linear"),
        }
    }  # not dino's, and none of the ~170 partitions nobody asked for
    for key in (_eval(MOCO), _eval(MOCO, f"{TASK}:full:fcn"), _eval(MOCO, "enmap_potsdam:frozen:linear")):  # fmt: skip
        _made(instance, "downstream_evaluation", key)  # (the runs finish)
    assert tick() == {}
    _made(instance, "downstream_dataset")  # the task's data changed: evaluations on it
    assert tick() == {
        "downstream_evaluation": {_eval(MOCO), _eval(MOCO, f"{TASK}:full:fcn"), _eval(DINO)},
        "baseline_evaluation": {_eval("random_init")},
    }


def test_default_evaluations_are_made_when_missing_and_no_others(env):
    instance, defs = env
    _trained_store(instance, 100)
    _made(instance, "downstream_dataset")
    _made(instance, "pretrained_checkpoint", MOCO, train_patches=100)
    _made(instance, "pretrained_checkpoint", DINO, train_patches=100)
    tick = Ticks(defs(), instance, *EVALUATIONS)
    assert tick() == {
        "downstream_evaluation": {_eval(MOCO)},  # params evaluate: the pipeline's checkpoint
        "baseline_evaluation": {_eval("random_init")},  # ... and evaluate.baselines
    }


def test_the_results_table_waits_for_the_evaluations_due_on_the_same_tick(env):
    instance, defs = env
    _evaluated_world(instance)
    tick = Ticks(defs(), instance, *EVALUATIONS, "benchmark_results")
    assert tick() == {}
    _made(instance, "pretrained_checkpoint", MOCO, train_patches=130)  # moco evaluations due
    _made(instance, "baseline_evaluation", _eval("random_init"))  # a finished evaluation
    assert "benchmark_results" not in tick()  # but more are due: not yet
    for key in (_eval(MOCO), _eval(MOCO, f"{TASK}:full:fcn"), _eval(MOCO, "enmap_potsdam:frozen:linear")):  # fmt: skip
        _made(instance, "downstream_evaluation", key)
    assert tick() == {"benchmark_results": {"None"}}


def test_maps_follow_new_scenes_and_a_new_head_not_a_catalogue_refresh(env):
    instance, defs = env
    _evaluated_world(instance)
    _made(instance, "scene_catalog")
    instance.add_dynamic_partitions("scenes", ["s1", "s2"])
    for scene in ("s1", "s2"):
        _made(instance, "scene_maps", scene)
    tick = Ticks(defs(), instance, "scene_maps")
    assert tick() == {}
    instance.add_dynamic_partitions("scenes", ["s3"])
    _made(instance, "scene_catalog")
    assert tick() == {"scene_maps": {"s3"}}
    _made(instance, "scene_maps", "s3")
    _made(instance, "downstream_evaluation", _eval(DINO))  # not the head the maps use
    assert tick() == {}
    _made(instance, "downstream_evaluation", _eval(MOCO))  # the default head, retrained
    assert tick() == {"scene_maps": {"s1", "s2", "s3"}}
