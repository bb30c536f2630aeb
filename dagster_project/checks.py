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
expectations by name with their offending rows, the command that fixes it and the Data Docs
index page; a failing blocking check also writes all of that to the run log as an error.
"""

import warnings

import dagster as dg

from dagster_project.assets.curate import curated_patches, patch_index
from dagster_project.partitions import scenes_partitions
from dagster_project.resources import SpectralearthSettings

DAGSTER = "dagster asset materialize -m dagster_project.definitions"


def scene_fix(scene: str) -> str:
    return (
        f"fix the product or the curate: thresholds in params.yaml, then curate the scene "
        f"again: `{DAGSTER} --select curated_patches --partition {scene}` (or Materialize "
        "that partition in the UI)"
    )


INDEX_FIX = (
    "the index holds every curated scene: after a curate: change in params.yaml, reload the "
    "code location and let automation curate every scene again (or backfill all partitions "
    f"of curated_patches in the UI; `spectralearth curate` outside Dagster), then "
    f"`{DAGSTER} --select patch_index`"
)


def _fix(report, default: str) -> str:
    """The library's own advice when the report carries one (``report.fix``), else ours."""
    fix = getattr(report, "fix", None)
    fix = fix() if callable(fix) else fix
    return str(fix) if fix else default


def _offending_rows(reports) -> dict:
    return {
        f"{r.suite}:{f['expectation']}({f.get('column') or ''})": f.get("unexpected_rows") or []
        for r in reports
        for f in r.failed
    }


def _result(
    context, reports, severity: dg.AssetCheckSeverity, fix: str | None
) -> dg.AssetCheckResult:
    passed = all(r.success for r in reports)
    meta = _metadata(reports)
    if not passed:
        log = context.log.error if severity == dg.AssetCheckSeverity.ERROR else context.log.warning
        lines = [r.summary() for r in reports if not r.success]
        for where, rows in _offending_rows(reports).items():
            lines.append(f"  {where}: offending rows {', '.join(rows[:10]) or '(not listed)'}")
        if fix:
            meta["fix"] = fix
            lines.append(f"fix: {fix}")
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

    scene = context.partition_key
    report = validate_scene(settings.load(), scene)
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

    report = validate_index(settings.load())
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

    reports = validate_warnings(settings.load())
    return _result(context, reports, dg.AssetCheckSeverity.WARN, None)


quality_checks = [scene_patches_expectations, patch_index_expectations, patch_index_warnings]
