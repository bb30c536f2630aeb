"""params.yaml is checked when it is read: every bad value is refused naming the file, the
section, the key and what was expected, before any stage writes anything."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from spectralearth.config import ParamsError, load_settings
from tests.helpers import write_params


def _with(tmp_path, section: str, key: str, value):
    params = write_params(tmp_path)
    raw = yaml.safe_load(params.read_text())
    raw[section][key] = value
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    return params


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("curate", "patch_size", "128px", "expected an integer, got '128px'"),
        ("curate", "patch_size", 128.5, "expected an integer, got 128.5"),
        ("curate", "patch_size", 0, "patch_size: 0 px must be > 0"),
        ("curate", "patch_size", -32, "patch_size: -32 px must be > 0"),
        ("curate", "max_cloud_frac", "0.01", "expected a number, got '0.01'"),
        ("curate", "max_cloud_frac", -0.1, "max_cloud_frac: -0.1 must lie in [0, 1]"),
        ("curate", "max_snow_frac", 1.5, "max_snow_frac: 1.5 must lie in [0, 1]"),
        ("curate", "test_frac", 0.9, "leaves no location for training"),
        ("evaluate", "epochs", "15", "expected an integer, got '15'"),
        ("evaluate", "baselines", ["rf"], "each must be one of"),
        ("evaluate", "protocol", "linear", "protocol 'linear' is not one of"),
        ("synth", "scenes", True, "expected an integer, got True"),
    ],
)
def test_bad_value_is_refused_naming_file_section_and_key(tmp_path, section, key, value, expected):
    params = _with(tmp_path, section, key, value)
    with pytest.raises(ParamsError) as err:
        load_settings(params)
    message = str(err.value)
    assert str(params) in message and f"[{section}]" in message and key in message
    assert expected in message


def test_a_bad_command_line_value_exits_2_and_writes_nothing(tmp_path, archive_copy):
    params = write_params(tmp_path / "cfg")
    out_dir = tmp_path / "curated"
    run = subprocess.run(
        [sys.executable, "-m", "spectralearth.cli", "--params", str(params), "curate",
         str(archive_copy), "--out", str(out_dir), "--patch-size", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "patch_size: 0 px must be > 0" in run.stderr and str(params) in run.stderr
    assert not out_dir.exists()


def test_the_settings_resource_leaves_the_environment_alone(tmp_path, monkeypatch):
    import os

    from dagster_project.resources import SpectralearthSettings

    monkeypatch.delenv("SPECTRALEARTH_DATA_DIR", raising=False)
    params = write_params(tmp_path)
    before = dict(os.environ)
    s = SpectralearthSettings(params_file=str(params), data_dir=str(tmp_path / "elsewhere")).load()
    assert s.layout.data_dir == tmp_path / "elsewhere"
    assert dict(os.environ) == before
    assert load_settings(params).layout.data_dir == tmp_path / "data"
