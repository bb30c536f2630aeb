"""Great Expectations suites as asset checks; blocking ones stop downstream assets."""

import dagster as dg

from dagster_project.assets.curate import patch_index
from dagster_project.resources import SpectralearthSettings
from spectralearth import pipeline


@dg.asset_check(
    asset=patch_index,
    blocking=True,
    description="expectations/patch_index.json + params.yaml filter thresholds",
)
def patch_index_expectations(settings: SpectralearthSettings) -> dg.AssetCheckResult:
    report = pipeline.validate(settings.load())
    return dg.AssetCheckResult(
        passed=report.success,
        metadata={
            "summary": report.summary(),
            "evaluated": len(report.results),
            "failed": len(report.failed),
        },
    )
