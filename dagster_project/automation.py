"""Declarative automation: when each asset is (re)made, as Dagster ``AutomationCondition``s,
and the one sensor that evaluates them.

What a user can rely on once the ``archive_sensor`` and the ``automation`` sensor run (UI:
Automation; or ``automation.enabled: true`` in params.yaml):

- **new scene** (the archive sensor registers its partition and refreshes the catalogue) ->
  its ``curated_patches`` partition -> ``patch_index`` (``automation.refresh``: eager, i.e.
  once no curation runs, or on a cron) -> band statistics, dataset summary,
  downstream dataset -> the evaluations on that dataset -> the results table; the new scene
  gets its map.
- **pretraining** follows the policy, not every scene: a trained checkpoint is retrained once
  the train split holds ``automation.retrain_min_new_share`` more patches than it was trained
  on (default 0.25), and/or on ``automation.retrain_cron`` when new patches arrived since; the
  pipeline's own checkpoint (params pretrain profile) is trained when it is missing.
- **evaluations** follow new checkpoints (their own partitions only: ``moco-x`` -> ``moco-x|*``)
  and new downstream data (evaluations on that dataset); the default ones (params
  ``evaluate:``) are made when missing; other partitions only when a user made them once.
- **maps** follow new scenes and a new trained head (the default evaluation partition).
- a parameter change (asset code versions, :mod:`dagster_project.versions`) redoes the
  assets it shapes.
- nothing starts while an upstream step runs or after an upstream blocking check failed; a
  failed step is not retried on its own (the UI shows it; materialize it again by hand).

Why these conditions and not ``AutomationCondition.eager()`` everywhere: eager would curate
every scene again whenever the catalogue refreshes, request all ~170 evaluation partitions of
a new checkpoint, never build the index while one scene's curation failed (eager waits for
missing parents), and ask for a parent and its differently-partitioned child on the same tick
(two runs at once, the child reading the parent's old output). Here a child asks only after
its parents *have* updated, except between unpartitioned assets, which then share one run.

Every condition is labelled, so the UI (asset page -> Automation) shows which part held an
asset back. Two conditions are plain Python (a partition list, the retraining share), so the
sensor evaluates them in the code server (``use_user_code_server=True``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import dagster as dg

from spectralearth import names
from spectralearth.config import AutomationSettings, Settings

AC = dg.AutomationCondition
SENSOR_NAME = "automation"


class PartitionsIn(dg.AutomationCondition):
    """True for the partitions among ``keys`` (named by ``label`` in the UI)."""

    def __init__(self, keys: Iterable[str], label: str):
        self._keys = frozenset(str(k) for k in keys)
        self._label = label

    @property
    def name(self) -> str:
        return self._label

    @property
    def description(self) -> str:
        return f"partition is one of {len(self._keys)}: " + ", ".join(sorted(self._keys)[:4])

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        keys = [
            k
            for k in context.candidate_subset.expensively_compute_partition_keys()
            if str(k) in self._keys
        ]
        subset = context.asset_graph_view.get_subset_from_partition_keys(
            key=context.key, partitions_def=context.partitions_def, partition_keys=keys
        )
        return dg.AutomationResult(context=context, true_subset=subset)


class TrainSplitGrew(dg.AutomationCondition):
    """True for a trained pretraining partition once the latest band statistics count at least
    ``share`` more train patches than the partition's latest checkpoint was trained on
    (metadata ``train_patches``); ``share`` 0 means any new patch. A checkpoint trained before
    that metadata existed never counts as grown."""

    def __init__(self, share: float, statistics: str = "band_statistics"):
        self._share = float(share)
        self._statistics = dg.AssetKey(statistics)

    @property
    def name(self) -> str:
        return f"train split grew by >= {self._share:.0%} since trained"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        from dagster_project.assets.pretrain import TRAIN_PATCHES

        instance = context.asset_graph_view.instance
        latest = instance.get_latest_materialization_event(self._statistics)
        count = latest.asset_materialization.metadata.get("n_patches") if latest else None
        keys = []
        if count is not None:
            now = int(count.value)
            for key in context.candidate_subset.expensively_compute_partition_keys():
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=context.key, asset_partitions=[str(key)]),
                    limit=1,
                ).records
                meta = records[0].asset_materialization.metadata if records else {}
                if TRAIN_PATCHES not in meta:
                    continue
                then = int(meta[TRAIN_PATCHES].value)
                if now > then and now - then >= self._share * then:
                    keys.append(key)
        subset = context.asset_graph_view.get_subset_from_partition_keys(
            key=context.key, partitions_def=context.partitions_def, partition_keys=keys
        )
        return dg.AutomationResult(context=context, true_subset=subset)


class ParentsDue(dg.AutomationCondition):
    """True where a parent is requested on this tick. (Dagster's ``will_be_requested`` only
    sees parents that can share the child's run, i.e. with the same partitions.)"""

    @property
    def name(self) -> str:
        return "a parent is requested this tick"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        due = context.get_empty_subset()
        for parent in context.asset_graph.get(context.key).parent_keys:
            requested = context.request_subsets_by_key.get(parent)
            if requested is not None and not requested.is_empty:
                mapped = requested.compute_mapped_subset(context.key, direction="down")
                due = due.compute_union(mapped)
        return dg.AutomationResult(
            context=context, true_subset=context.candidate_subset.compute_intersection(due)
        )


# --- building blocks ------------------------------------------------------------------------


def _parents_updated() -> dg.AutomationCondition:
    """A parent materialized since the previous tick (not "will be requested": a parent
    partitioned differently would run in another run at the same time)."""
    return AC.any_deps_match(AC.newly_updated() & ~AC.executed_with_root_target()).with_label(
        "a parent updated"
    )


def _idle() -> dg.AutomationCondition:
    return (~AC.any_deps_in_progress() & ~AC.in_progress()).with_label(
        "neither it nor a parent is running"
    )


def _no_parent_due() -> dg.AutomationCondition:
    """No parent is requested on this tick: a parent partitioned otherwise would run in a run
    of its own at the same time, so the child waits for it (and then sees it updated)."""
    return (~ParentsDue()).with_label("no parent is due this tick")


def _parents_present() -> dg.AutomationCondition:
    return (~AC.any_deps_missing()).with_label("every parent exists")


def _checks_passed() -> dg.AutomationCondition:
    """No parent partition's blocking check failed (Dagster's ``all_deps_match`` holds when
    *any* partition of a parent matches, so the rule is spelled as "no parent matches a
    failure"). A parent partition never made, e.g. a scene whose curation failed, has no
    check result: it is absent from what it feeds, not bad."""
    return (
        ~AC.any_deps_match(AC.any_checks_match(AC.check_failed(), blocking_only=True))
    ).with_label("no parent's blocking check failed")


def _missing_once() -> dg.AutomationCondition:
    """Missing and not failed on its last try: made once, not retried in a loop."""
    return (AC.missing() & ~AC.execution_failed()).with_label("missing (and did not fail)")


# --- one condition per asset ---------------------------------------------------------------


def curate_condition() -> dg.AutomationCondition:
    """A scene partition is curated once (new scenes) and again when the ``curate:``
    parameters change; a catalogue refresh alone does not curate anything again."""
    return (
        (_missing_once() | AC.code_version_changed().since_last_handled())
        & _parents_present()
        & _idle()
        & _no_parent_due()
    ).with_label("curate new scenes (and all after a curate: change)")


def refresh_condition(refresh: str) -> dg.AutomationCondition:
    """The index follows curated scenes: ``eager`` as soon as no curation runs, or on a cron
    if new scenes were curated since the last index."""
    changed = (_parents_updated() | AC.code_version_changed()).with_label(
        "new curated scenes or changed split parameters"
    )
    if refresh == "eager":
        when = changed.since_last_handled()
    else:
        when = AC.cron_tick_passed(refresh).since_last_handled() & changed.since(AC.newly_updated())
    return (when & _idle() & _no_parent_due() & _checks_passed()).with_label(f"refresh: {refresh}")


def follow_condition() -> dg.AutomationCondition:
    """An unpartitioned asset made from the index: eager (its unpartitioned children join the
    same run), never past a failed blocking check."""
    return (
        (AC.newly_missing() | AC.any_deps_updated() | AC.code_version_changed())
        .since_last_handled()
        .with_label("a parent updated, or it is missing or changed")
        & _parents_present()
        & _idle()
        & _checks_passed()
    ).with_label("follow the index")


def gather_condition() -> dg.AutomationCondition:
    """The results table gathers whatever evaluations exist, once none of them runs."""
    return (
        (AC.newly_missing() | _parents_updated() | AC.code_version_changed()).since_last_handled()
        & _idle()
        & _no_parent_due()
    ).with_label("gather finished evaluations")


def pretrain_condition(settings: Settings) -> dg.AutomationCondition:
    """Retrain a trained checkpoint by the policy (``automation.retrain_*``); train the
    pipeline's own checkpoint when it is missing. A checkpoint whose last run failed waits
    for a hand-started run (no retry loop)."""
    from dagster_project.partitions import checkpoint_key

    policy = settings.automation
    triggers: list[dg.AutomationCondition] = [AC.code_version_changed().since_last_handled()]
    if policy.retrain_min_new_share is not None:
        triggers.append(TrainSplitGrew(policy.retrain_min_new_share))
    if policy.retrain_cron:
        new_data = _parents_updated().since(AC.newly_updated()).with_label("new data since trained")
        triggers.append((AC.cron_tick_passed(policy.retrain_cron) & new_data).since_last_handled())
    retrain = (~AC.missing() & ~AC.execution_failed() & _any(triggers)).with_label("retrain policy")
    own = checkpoint_key(settings.pretrain.method, settings.pretrain.backbone)
    first = PartitionsIn([own], "the pipeline's own checkpoint") & _missing_once()
    gates = _parents_present() & _idle() & _no_parent_due() & _checks_passed()
    return ((retrain | first) & gates).with_label("pretrain by policy")


def evaluation_condition(
    default_keys: Iterable[str], task_keys: Iterable[str]
) -> dg.AutomationCondition:
    """Made evaluations follow their checkpoint and the data of their dataset; the default
    ones are made when missing."""
    retrained = _parents_updated().ignore(dg.AssetSelection.assets("downstream_dataset"))
    new_data = PartitionsIn(task_keys, "on the built downstream dataset") & _parents_updated(
    ).allow(dg.AssetSelection.assets("downstream_dataset"))  # fmt: skip
    update = (
        ~AC.missing() & (retrained | new_data | AC.code_version_changed()).since_last_handled()
    ).with_label("a made evaluation whose checkpoint or data changed")
    default = PartitionsIn(default_keys, "default evaluations (params evaluate:)") & (
        _missing_once()
    )
    gates = _parents_present() & _idle() & _no_parent_due()
    return ((update | default) & gates).with_label("evaluate")


def maps_condition() -> dg.AutomationCondition:
    """Every scene is mapped once, and again when the trained head (or ``predict:``)
    changes; a catalogue refresh alone maps nothing again."""
    head = _parents_updated().ignore(dg.AssetSelection.assets("scene_catalog"))
    return (
        (_missing_once() | (head | AC.code_version_changed()).since_last_handled())
        & _parents_present()
        & _idle()
        & _no_parent_due()
    ).with_label("map new scenes and after a new head")


def _any(conditions: list[dg.AutomationCondition]) -> dg.AutomationCondition:
    out = conditions[0]
    for c in conditions[1:]:
        out = out | c
    return out


def conditions(settings: Settings) -> dict[str, dg.AutomationCondition]:
    """The condition of every asset, from params.yaml."""
    from dagster_project.partitions import (
        EVALUATION_KEYS,
        evaluation_partition,
        pretrain_partitions,
        split_evaluation_key,
    )
    from spectralearth.stages.evaluate import default_requests

    defaults = [
        str(evaluation_partition(r.model, r.dataset, r.protocol, r.head))
        for r in default_requests(settings)
    ]
    on_task = [k for k in EVALUATION_KEYS if split_evaluation_key(k)[0] == settings.evaluate.task]
    checkpoints = pretrain_partitions.get_partition_keys()
    task_checkpoints = [f"{c}|{k}" for c in checkpoints for k in on_task]
    task_baselines = [f"{b}|{k}" for b in names.BASELINES for k in on_task]
    follow = follow_condition()
    return {
        "scene_catalog": AC.code_version_changed()
        .since_last_handled()
        .with_label("refreshed by the archive sensor (and after a code change)"),
        "curated_patches": curate_condition(),
        "patch_index": refresh_condition(settings.automation.refresh),
        # no parents, so never true: the UI shows why it does not run on its own
        "release_index": AC.any_deps_updated().with_label(
            "by hand only: index a downloaded release (launchpad: root)"
        ),
        "band_statistics": follow,
        "dataset_summary": follow,
        "downstream_dataset": follow,
        "pretrained_checkpoint": pretrain_condition(settings),
        "downstream_evaluation": evaluation_condition(defaults, task_checkpoints),
        "baseline_evaluation": evaluation_condition(defaults, task_baselines),
        "benchmark_results": gather_condition(),
        "scene_maps": maps_condition(),
    }


def automation_sensor(settings: AutomationSettings) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates every asset's condition every ``interval_seconds``."""
    with warnings.catch_warnings():
        # use_user_code_server is beta in Dagster 1.13; the two Python conditions need it
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.AutomationConditionSensorDefinition(
            SENSOR_NAME,
            target=dg.AssetSelection.all(),
            use_user_code_server=True,
            minimum_interval_seconds=settings.interval_seconds,
            default_status=(
                dg.DefaultSensorStatus.RUNNING
                if settings.enabled
                else dg.DefaultSensorStatus.STOPPED
            ),
            description="Evaluates every asset's automation condition (dagster_project/"
            "automation.py; policies in params.yaml automation:) and launches what is due.",
        )
