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

Each result carries the report's summary, the counts of evaluated/failed expectations, the
failed expectations by name with their offending rows, what fixes it (the suite's
``meta.fix``, spectralearth.validation) plus the Dagster command that redoes the asset, and the
Data Docs index page; a failing check also writes all of that to the run log.
"""

import warnings

import dagster as dg

from dagster_project.assets.curate import curated_patches, patch_index
from dagster_project.partitions import scenes_partitions
from dagster_project.resources import SpectralearthSettings

DAGSTER = "dagster asset materialize -m dagster_project.definitions"


def scene_fix(scene: str) -> str:
    """Redo one scene in Dagster (after fixing the product or the curate: thresholds)."""
    return (
        f"in Dagster: `{DAGSTER} --select curated_patches --partition {scene}` (or Materialize "
        "that partition in the UI)"
    )


INDEX_FIX = (
    "in Dagster: after a curate: change, reload the code location and automation curates "
    "every scene again (or backfill every partition of curated_patches in the UI), then "
    f"`{DAGSTER} --select patch_index`"
)


def _fix(report, dagster: str) -> str:
    """What the suite says fixes the failed expectations (``meta.fix``), then the Dagster
    command that redoes the asset."""
    return "\n".join([*getattr(report, "fixes", []), dagster])


def _offending_rows(reports) -> dict:
    return {f"{r.suite}:{f.name}": list(f.unexpected_rows) for r in reports for f in r.failed}


def _result(
    context, reports, severity: dg.AssetCheckSeverity, fix: str | None
) -> dg.AssetCheckResult:
    passed = all(r.success for r in reports)
    meta = _metadata(reports)
    if not passed:  # the summary names each failed expectation, its rows and the suite's fix
        log = context.log.error if severity == dg.AssetCheckSeverity.ERROR else context.log.warning
        lines = [r.summary() for r in reports if not r.success]
        if fix:
            meta["fix"] = fix
            lines.append(f"  fix: {fix.splitlines()[-1]}")  # the Dagster command
        log("\n".join(lines))
    return dg.AssetCheckResult(passed=passed, severity=severity, metadata=meta)


def _metadata(reports) -> dict:
    meta: dict = {
        "summary": " | ".join(r.summary() for r in reports),
        "evaluated": sum(len(r.results) for r in reports),
        "failed": sum(len(r.failed) for r in reports),
        "failed_expectations": dg.MetadataValue.json(
            {r.suite: r.failed_expectations for r in reports}
        ),
    }
    if offending := _offending_rows(reports):
        meta["offending_rows"] = dg.MetadataValue.json(offending)
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
    scene = context.partition_key
    report = validate_scene(s.layout.patches, scene, s.layout.validation, s)
    return _result(context, [report], dg.AssetCheckSeverity.ERROR, _fix(report, scene_fix(scene)))


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
    return _result(context, [report], dg.AssetCheckSeverity.ERROR, _fix(report, INDEX_FIX))


@dg.asset_check(
    asset=patch_index,
    blocking=False,
    description="Warnings: per-band mean drift vs the reference statistics "
    "(expectations/band_drift.json) and multitemporal share (expectations/multitemporal.json)",
)
def patch_index_warnings(
    context: dg.AssetCheckExecutionContext, settings: SpectralearthSettings
) -> dg.AssetCheckResult:
    from spectralearth.validation import validate_warnings

    s = settings.load()
    reports = validate_warnings(s.layout.patches, s.layout.validation, s)
    return _result(context, reports, dg.AssetCheckSeverity.WARN, None)


quality_checks = [scene_patches_expectations, patch_index_expectations, patch_index_warnings]
