"""Data-quality gates as asset checks (suites in expectations/, see spectralearth.validation).

Blocking checks (severity ERROR) stop the downstream assets of the run when they fail:

- ``scene_patches_expectations`` on each ``curated_patches`` partition: the ``patches`` suite
  on that scene's patch files (shape, dtype, nodata, NaN, value range, UTM CRS, 30 m pixels);
  ``patch_index`` does not build from a bad scene.
- ``patch_index_expectations`` on ``patch_index``: the ``patch_index`` suite (unique
  (location, scene) pairs, location-disjoint splits, params.yaml thresholds); shards, statistics
  and the summary are not built from a bad index.

``patch_index_warnings`` (non-blocking, severity WARN): per-band drift against the reference
statistics and the multitemporal share; it never stops anything.

Each result carries a summary line, the counts of evaluated/failed expectations, the failed
expectations by name and the Data Docs index page.
"""

import warnings

import dagster as dg

from dagster_project.assets.curate import curated_patches, patch_index
from dagster_project.partitions import scenes_partitions
from dagster_project.resources import SpectralearthSettings


def _metadata(reports) -> dict:
    meta: dict = {
        "summary": " | ".join(r.summary() for r in reports),
        "evaluated": sum(len(r.results) for r in reports),
        "failed": sum(len(r.failed) for r in reports),
        "failed_expectations": dg.MetadataValue.json(
            {r.suite: r.failed_expectations for r in reports}
        ),
    }
    rows = [r.rows for r in reports if r.rows is not None]
    if rows:
        meta["rows"] = sum(rows)
    docs = next((r.docs for r in reports if r.docs), None)
    if docs is not None:
        meta["data_docs"] = dg.MetadataValue.path(str(docs))
        meta["data_docs_url"] = dg.MetadataValue.url(docs.resolve().as_uri())
    for r in reports:
        for key, value in r.observed.items():
            if isinstance(value, bool | int | float | str):
                meta[f"{r.suite}_{key}"] = value
    return meta


def _scene_patches_expectations(
    context: dg.AssetCheckExecutionContext, settings: SpectralearthSettings
) -> dg.AssetCheckResult:
    from spectralearth.validation import validate_scene

    s = settings.load()
    report = validate_scene(s.layout.patches, context.partition_key, s.layout.validation, s)
    if not report.success:  # the run log names the expectation, the rows and the fix
        context.log.error(report.summary())
    return dg.AssetCheckResult(
        passed=report.success, severity=dg.AssetCheckSeverity.ERROR, metadata=_metadata([report])
    )


# A partitioned check runs on the partition its asset just materialized (without
# partitions_def it would load every partition). Dagster 1.13 marks partitions_def on checks
# as preview; the warning is silenced here only, where we rely on it knowingly.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)
    scene_patches_expectations = dg.asset_check(
        asset=curated_patches,
        name="scene_patches_expectations",
        blocking=True,
        partitions_def=scenes_partitions,
        description="expectations/patches.json on this scene's patch files (+ patch size and "
        "nodata limit from params.yaml)",
    )(_scene_patches_expectations)


@dg.asset_check(
    asset=patch_index,
    blocking=True,
    description="expectations/patch_index.json + params.yaml filter thresholds",
)
def patch_index_expectations(
    context: dg.AssetCheckExecutionContext, settings: SpectralearthSettings
) -> dg.AssetCheckResult:
    from spectralearth.validation import validate_index

    s = settings.load()
    report = validate_index(s.layout.patches, s.layout.validation, s)
    if not report.success:
        context.log.error(report.summary())
    return dg.AssetCheckResult(
        passed=report.success, severity=dg.AssetCheckSeverity.ERROR, metadata=_metadata([report])
    )


@dg.asset_check(
    asset=patch_index,
    blocking=False,
    description="Warnings: per-band mean drift vs the reference statistics "
    "(expectations/band_drift.json) and multitemporal share (expectations/multitemporal.json)",
)
def patch_index_warnings(settings: SpectralearthSettings) -> dg.AssetCheckResult:
    from spectralearth.validation import validate_warnings

    s = settings.load()
    reports = validate_warnings(s.layout.patches, s.layout.validation, s)
    return dg.AssetCheckResult(
        passed=all(r.success for r in reports),
        severity=dg.AssetCheckSeverity.WARN,
        metadata=_metadata(reports),
    )


quality_checks = [scene_patches_expectations, patch_index_expectations, patch_index_warnings]
