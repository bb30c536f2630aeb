"""What a failing gate reports: the expectation, its params.yaml threshold, a bounded list of
offending rows, and the fix; the same in the JSON report and the Dagster metadata."""

import json

import pandas as pd

from spectralearth.config import load_settings
from spectralearth.validation import (
    MAX_NAMED_ROWS,
    ExpectationResult,
    QualityGates,
    ValidationReport,
    validate_patch_index,
)
from spectralearth.validation.report import SHOWN_ROWS


def _cloudy_index(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patch_id": [f"{i:07d}/00001" for i in range(1, n + 1)],
            "location_id": list(range(1, n + 1)),
            "scene_id": [1] * n,
            "datetime": pd.to_datetime(["2024-06-01"] * n, utc=True),
            "split": ["train"] * n,
            "valid_frac": [1.0] * n,
            "cloud_frac": [0.5] * n,
            "snow_frac": [0.0] * n,
            "mean_reflectance": [1500.0] * n,
            "n_bands": [202] * n,
        }
    )


def test_offending_rows_are_named_and_bounded(tmp_path):
    settings = load_settings()
    report = validate_patch_index(
        _cloudy_index(40),
        settings,
        tmp_path / "patch_index.json",
        fix_context={"curated": "/data/patches"},
    )
    (failed,) = report.failed
    assert failed.unexpected_count == 40 and len(failed.unexpected_rows) == MAX_NAMED_ROWS
    summary = report.summary()
    assert summary.splitlines()[0] == "patch_index: 1 of 16 expectations failed on 40 rows"
    shown = [f"{i:07d}/00001" for i in range(1, SHOWN_ROWS + 1)]
    assert f"40 unexpected: {', '.join(shown)} and {40 - SHOWN_ROWS} more" in summary
    assert f"{SHOWN_ROWS + 1:07d}/00001" not in summary
    assert "fix: " in summary and "`spectralearth curate --out /data/patches`" in summary
    saved = json.loads((tmp_path / "patch_index.json").read_text())
    (row,) = [r for r in saved["results"] if not r["success"]]
    assert len(row["unexpected_rows"]) == MAX_NAMED_ROWS and row["fix"] == failed.fix
    assert row["parameters"]["max_value"] == {"expression": "curate_max_cloud_frac", "value": 0.01}
    assert saved["summary"] == summary
    meta = report.metadata()
    assert meta["failed_expectations"] == ["expect_column_values_to_be_between(cloud_frac)"]
    assert meta["unexpected_rows"][failed.name] == list(failed.unexpected_rows)
    assert meta["fix"] == failed.fix and meta["summary"] == summary
    assert all(value is not None for value in meta.values())


def test_a_failing_expectation_without_rows_shows_what_was_observed():
    result = ExpectationResult(
        "expect_table_row_count_to_be_between", None, False, observed_value="0", fix="curate"
    )
    report = ValidationReport("patch_index", False, (result,), rows=0)
    assert "expect_table_row_count_to_be_between(): observed 0" in report.summary()
    assert report.summary().endswith("fix: curate")


def test_quality_gates_read_as_a_mapping_and_fail_on_a_blocking_suite():
    ok = ValidationReport("patch_index", True, ())
    bad = ValidationReport(
        "patches", False, (ExpectationResult("expect_x", "dtype", False, fix="re-curate"),)
    )
    warning = ValidationReport("band_drift", False, (), blocking=False)
    gates = QualityGates(patch_index=ok, patches=bad, band_drift=warning)
    assert list(gates) == ["patch_index", "patches", "band_drift"] and gates["patches"] is bad
    assert not gates.passed and gates.blocking_failed == ["patches"]
    assert "validate: blocking gates failed: patches" in gates.summary()
    assert "WARNING band_drift" in gates.summary()
    assert QualityGates(patch_index=ok, band_drift=warning).passed  # a warning never blocks
    assert gates.metadata()["patches"]["fix"] == "re-curate"
