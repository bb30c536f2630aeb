"""The suites in expectations/: the contract of the curated index, thresholds from
params.yaml as suite parameters, and what a failing expectation tells the user to run."""

import dataclasses
import json

import pandas as pd
import pytest

from spectralearth.config import load_settings
from spectralearth.validation import (
    GateSettings,
    check_parameters,
    expectation_label,
    expectations_dir,
    load_suite_dict,
    parameter_names,
    validate_frame,
    validate_patch_index,
)
from spectralearth.validation.suites import render_fix


def _index(n=4, **changes) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "patch_id": [f"{i:07d}/00001" for i in range(1, n + 1)],
            "location_id": list(range(1, n + 1)),
            "scene_id": [1] * n,
            "datetime": pd.to_datetime(["2024-06-01"] * n, utc=True),
            "split": ["train"] * n,
            "valid_frac": [1.0] * n,
            "cloud_frac": [0.0] * n,
            "snow_frac": [0.0] * n,
            "mean_reflectance": [1500.0] * n,
            "n_bands": [202] * n,
        }
    )
    for col, values in changes.items():
        df[col] = values
    return df


@pytest.fixture(scope="module")
def curate_settings():
    return load_settings().curate


def test_suite_is_stored_as_gx_json_in_expectations():
    suite = json.loads((expectations_dir() / "patch_index.json").read_text())
    assert suite["name"] == "patch_index" and len(suite["expectations"]) >= 10


def test_good_index_passes_and_report_is_written(curate_settings, tmp_path):
    report = validate_patch_index(_index(), curate_settings, tmp_path / "r.json")
    assert report.success, report.summary()
    assert json.loads((tmp_path / "r.json").read_text())["success"] is True


@pytest.mark.parametrize(
    "changes, failing",
    [
        ({"patch_id": ["0000001/00001"] * 4}, "expect_column_values_to_be_unique"),
        ({"cloud_frac": [0.0, 0.0, 0.5, 0.0]}, "expect_column_values_to_be_between"),
        ({"split": ["train", "holdout", "val", "test"]}, "expect_column_values_to_be_in_set"),
        ({"n_bands": [202, 224, 202, 202]}, "expect_column_values_to_be_in_set"),
        ({"valid_frac": [1.0, 0.9, 1.0, 1.0]}, "expect_column_values_to_be_between"),
        ({"location_id": [1, 1, 3, 4]}, "expect_compound_columns_to_be_unique"),
        (
            {"location_id": [1, 1, 3, 4], "scene_id": [1, 2, 1, 1], "split": ["train", "val"] * 2},
            "expect_column_values_to_be_between",  # splits_per_location: 2 for location 1
        ),
    ],
)
def test_bad_index_fails_naming_the_expectation(curate_settings, changes, failing):
    report = validate_patch_index(_index(**changes), curate_settings)
    assert not report.success
    assert failing in {r.expectation for r in report.failed}


def test_empty_index_fails(curate_settings):
    report = validate_patch_index(_index().iloc[:0], curate_settings)
    assert not report.success


# --- the suite files are the whole contract -----------------------------------------------

SUITES = ("patches", "patch_index", "band_drift", "multitemporal")


def test_every_suite_parameter_is_a_params_yaml_value():
    """Each $PARAMETER the suites use is a number of params.yaml's curate/validate sections,
    and every threshold those sections hold for the gates is used by a suite."""
    parameters = GateSettings.of(load_settings()).parameters()
    used = set()
    for name in SUITES:
        suite = load_suite_dict(name)
        check_parameters(suite, parameters)  # raises on a name params.yaml does not give
        used |= parameter_names(suite)
    assert used <= set(parameters)
    assert {
        "curate_patch_size",
        "curate_max_nodata_frac",
        "curate_max_cloud_frac",
        "curate_max_snow_frac",
        "validate_max_band_drift_sigma",
        "validate_min_multitemporal_share",
    } <= used


def test_no_expectation_is_added_in_code(curate_settings):
    """A run evaluates exactly the expectations of the suite file, nothing appended."""
    report = validate_patch_index(_index(), curate_settings)
    assert len(report.results) == len(load_suite_dict("patch_index")["expectations"])
    assert report.source == str(expectations_dir() / "patch_index.json")


def test_a_params_threshold_changes_the_verdict_not_the_suite(curate_settings):
    suite_file = expectations_dir() / "patch_index.json"
    before = suite_file.read_bytes()
    cloudy = _index(cloud_frac=[0.0, 0.03, 0.0, 0.0])
    loose = dataclasses.replace(curate_settings, max_cloud_frac=0.05)
    strict = dataclasses.replace(curate_settings, max_cloud_frac=0.01)
    assert validate_patch_index(cloudy, loose).success
    report = validate_patch_index(cloudy, strict)
    assert report.failed_expectations == ["expect_column_values_to_be_between(cloud_frac)"]
    (failed,) = report.failed
    assert failed.parameters["max_value"] == ("curate_max_cloud_frac", 0.01)
    assert failed.unexpected_rows == ("0000002/00001",)
    assert suite_file.read_bytes() == before


def test_a_parameter_expression_is_evaluated(curate_settings):
    """valid_frac >= 1 - curate_max_nodata_frac: an expression in the suite file."""
    loose = dataclasses.replace(curate_settings, max_nodata_frac=0.2)
    report = validate_patch_index(_index(valid_frac=[1.0, 0.85, 1.0, 1.0]), loose)
    assert report.success, report.summary()
    report = validate_patch_index(_index(valid_frac=[1.0, 0.75, 1.0, 1.0]), loose)
    (failed,) = report.failed
    expression, value = failed.parameters["min_value"]
    assert expression == "1 - curate_max_nodata_frac" and value == pytest.approx(0.8)


def test_a_suite_naming_an_unknown_parameter_is_refused(tmp_path, curate_settings):
    suite = load_suite_dict("patch_index")
    suite["expectations"].append(
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "cloud_frac", "max_value": {"$PARAMETER": "curate_max_clouds"}},
        }
    )
    (tmp_path / "patch_index.json").write_text(json.dumps(suite))
    suite = load_suite_dict("patch_index", tmp_path)
    parameters = GateSettings.of(curate_settings).parameters()
    with pytest.raises(ValueError) as info:
        validate_frame(_index(), suite, parameters)
    message = str(info.value)
    assert str(tmp_path / "patch_index.json") in message
    assert "expect_column_values_to_be_between(cloud_frac)" in message
    assert "curate_max_clouds" in message and "curate_max_cloud_frac" in message


def test_a_broken_suite_file_is_named(tmp_path):
    (tmp_path / "patches.json").write_text("{not json")
    with pytest.raises(ValueError, match=str(tmp_path / "patches.json")):
        load_suite_dict("patches", tmp_path)
    (tmp_path / "patches.json").write_text('{"name": "patches"}')
    with pytest.raises(ValueError, match="list of expectations"):
        load_suite_dict("patches", tmp_path)


def test_fix_placeholders_are_filled_and_unknown_ones_kept():
    text = "run `spectralearth curate --out {curated}` ({curate_patch_size} px, {unknown})"
    filled = render_fix(text, {"curated": "/d/patches", "curate_patch_size": 128})
    assert filled == "run `spectralearth curate --out /d/patches` (128 px, {unknown})"
    assert render_fix("a stray { brace", {}) == "a stray { brace"
    assert render_fix(None, {}) is None


def test_every_failing_blocking_expectation_has_a_fix_with_a_command():
    """No blocking expectation fails without saying what to run."""
    for name in ("patches", "patch_index"):
        suite = load_suite_dict(name)
        for expectation in suite["expectations"]:
            fix = (expectation.get("meta") or {}).get("fix") or suite["meta"].get("fix")
            assert fix and "spectralearth curate --out {curated}" in fix, (
                name,
                expectation_label(expectation),
            )
