"""Asset code versions from the params.yaml keys that shape each asset.

A code version is Dagster's name for "what would make this asset come out differently". Each
asset's version is a short hash of exactly the parameters its stage reads, so that changing a
parameter (by hand or with ``dvc exp run -S curate.max_cloud_frac=...``) marks the assets it
shapes, and only those, as stale in the UI ("code version changed" on the asset, "upstream
code version" on everything downstream), and automation redoes them
(``AutomationCondition.code_version_changed`` in :mod:`dagster_project.automation`):

- ``curate:`` filters and patch size -> every ``curated_patches`` partition (the split shares
  only -> ``patch_index``);
- the pretraining profile -> ``pretrained_checkpoint``;
- ``evaluate:`` training settings -> ``downstream_evaluation`` and ``baseline_evaluation``;
- ``evaluate.task`` -> ``downstream_dataset``; ``predict:`` -> ``scene_maps``.

A code version is per asset, not per partition: a change of one method's entry in the
pretraining profile marks every trained pretraining partition. Versions are read when the
definitions load: after editing params.yaml, reload the code location (UI: Deployment ->
Reload, or restart ``dagster dev``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from spectralearth.config import Settings

# bump a stage's entry when its code changes what it writes for the same parameters
CODE_REVISION = {
    "scene_catalog": 1,
    "curated_patches": 1,
    "patch_index": 1,
    "release_index": 1,
    "band_statistics": 1,
    "dataset_summary": 1,
    "pretrained_checkpoint": 1,
    "downstream_dataset": 1,
    "downstream_evaluation": 1,
    "baseline_evaluation": 1,
    "benchmark_results": 1,
    "scene_maps": 1,
}

# split shares only place patches in train/val/test: they shape the index, not the patches
SPLIT_KEYS = ("val_frac", "test_frac")
# evaluation keys that are partition dimensions, pick the default partitions or record how the
# settings were resolved, not what an evaluation computes
EVALUATION_SELECTORS = ("task", "protocol", "head", "baselines", "overridden", "resolved_for")


def shaping_params(settings: Settings) -> dict[str, dict]:
    """The parameters each asset's stage reads (assets reading none are absent)."""
    curate = dataclasses.asdict(settings.curate)
    evaluate = {
        k: v for k, v in dataclasses.asdict(settings.evaluate).items()
        if k not in EVALUATION_SELECTORS
    }  # fmt: skip
    if "recipes" in evaluate:  # only the recipe in use shapes the results
        evaluate["recipes"] = evaluate["recipes"].get(evaluate.get("recipe"))
    pretrain = settings.raw.get("pretrain", {})
    profile = settings.pretrain.profile  # the one the settings resolved (a resource may pick it)
    return {
        "curated_patches": {k: v for k, v in curate.items() if k not in SPLIT_KEYS},
        "patch_index": {k: curate[k] for k in SPLIT_KEYS},
        "release_index": {k: curate[k] for k in SPLIT_KEYS},
        # the whole profile: its per-method entries shape the partitions of their method
        "pretrained_checkpoint": {
            "profile": profile,
            **(pretrain.get("profiles", {}).get(profile) or {}),
        },
        "downstream_dataset": {"task": settings.evaluate.task},
        "downstream_evaluation": evaluate,
        "baseline_evaluation": evaluate,
        "scene_maps": dataclasses.asdict(settings.predict),
    }


def _digest(values: dict) -> str:
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def code_versions(settings: Settings | None) -> dict[str, str]:
    """``{asset: "r<revision>-<params hash>"}`` (``r<revision>`` alone for an asset no
    parameter shapes); without settings, the code revisions only."""
    params = shaping_params(settings) if settings is not None else {}
    return {
        asset: f"r{revision}" + (f"-{_digest(params[asset])}" if asset in params else "")
        for asset, revision in CODE_REVISION.items()
    }
