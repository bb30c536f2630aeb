"""Great Expectations 1.x validation of tables the pipeline writes (suites in expectations/).

The suite files hold the contract; thresholds that live in params.yaml are appended at
validation time so the suite and the curation filters come from one place.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spectralearth.config import CurateSettings, project_root
from spectralearth.io import atomic_path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass
class ValidationReport:
    suite: str
    success: bool
    results: list[dict]

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if not r["success"]]

    def summary(self) -> str:
        if self.success:
            return f"{self.suite}: all {len(self.results)} expectations passed"
        parts = [f"{r['expectation']}({r.get('column') or ''})" for r in self.failed]
        return f"{self.suite}: {len(self.failed)} of {len(self.results)} failed: " + ", ".join(
            parts
        )


def expectations_dir() -> Path:
    env = os.environ.get("SPECTRALEARTH_EXPECTATIONS")
    return Path(env) if env else project_root() / "expectations"


def load_suite_dict(name: str, directory: Path | None = None) -> dict:
    path = (directory or expectations_dir()) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"expectation suite not found: {path}")
    return json.loads(path.read_text())


def threshold_expectations(settings: CurateSettings) -> list[dict]:
    """Expectations that restate params.yaml's curation filters on the index."""
    return [
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {
                "column": "valid_frac",
                "min_value": 1.0 - settings.max_nodata_frac,
                "max_value": 1.0,
            },
        },
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {
                "column": "cloud_frac",
                "min_value": 0.0,
                "max_value": settings.max_cloud_frac,
            },
        },
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {
                "column": "snow_frac",
                "min_value": 0.0,
                "max_value": settings.max_snow_frac,
            },
        },
    ]


def validate_frame(df: pd.DataFrame, suite: dict) -> ValidationReport:
    """Run a suite (GX JSON dict) on a DataFrame with an ephemeral GX context."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    table = pd.DataFrame(df.drop(columns=[c for c in ("geometry",) if c in df.columns]))
    batch_def = (
        ctx.data_sources.add_pandas("frames")
        .add_dataframe_asset(suite["name"])
        .add_batch_definition_whole_dataframe("all")
    )
    gx_suite = ctx.suites.add(gx.ExpectationSuite(**suite))
    batch = batch_def.get_batch(batch_parameters={"dataframe": table})
    res = batch.validate(gx_suite)
    results = []
    for r in res.results:
        cfg = r.expectation_config
        results.append(
            {
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column"),
                "success": bool(r.success),
                "unexpected_count": (r.result or {}).get("unexpected_count"),
                "observed_value": str((r.result or {}).get("observed_value", "")),
            }
        )
    return ValidationReport(suite["name"], bool(res.success), results)


def validate_patch_index(
    index: pd.DataFrame, settings: CurateSettings, report_path: Path | None = None
) -> ValidationReport:
    suite = load_suite_dict("patch_index")
    suite = {**suite, "expectations": suite["expectations"] + threshold_expectations(settings)}
    report = validate_frame(index, suite)
    if report_path is not None:
        with atomic_path(report_path) as tmp:
            tmp.write_text(
                json.dumps(
                    {"suite": report.suite, "success": report.success, "results": report.results},
                    indent=1,
                )
            )
    return report
