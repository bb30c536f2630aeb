import json

import pandas as pd
import pytest

from spectralearth.config import load_settings
from spectralearth.validation import expectations_dir, validate_patch_index


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
