"""#14.6: a stage writes only where it is told. ``spectralearth validate --patches OTHER
--report ELSEWHERE`` used to overwrite the pipeline's own ``data/validation/{patches,
warnings}.json`` and Data Docs; now every report, the GX project and the Data Docs go under
ELSEWHERE and the default data folder is left byte-identical (or absent). Bad input names
itself, says what to run, and leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
import yaml

from spectralearth import validation as v
from spectralearth.config import load_settings
from tests.helpers import tiny_params


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: val for k, val in os.environ.items() if k != v.REFERENCE_ENV}
    env.pop("SPECTRALEARTH_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "spectralearth.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256); {} when it is absent."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def curated(tiny_archive, tmp_path_factory):
    """A params.yaml whose data folder holds the tiny archive curated by the CLI."""
    root = tmp_path_factory.mktemp("outputs")
    params = tiny_params(root / "data")
    params["archive_dir"] = str(tiny_archive)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    out = _cli("--params", str(path), "curate")
    assert out.returncode == 0, out.stderr
    return path, root / "data"


@pytest.fixture
def other(curated, tmp_path):
    """Another curated folder (a copy of the default one) and where its reports should go."""
    params, data = curated
    shutil.copytree(data / "patches", tmp_path / "other")
    return params, data, tmp_path / "other", tmp_path / "elsewhere"


def test_validating_another_folder_writes_only_under_its_report_folder(other):
    params, data, patches, report = other
    before = _snapshot(data)
    assert not (data / "validation").exists()
    out = _cli(
        "--params", str(params), "validate", "--patches", str(patches), "--report", str(report)
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert _snapshot(data) == before and not (data / "validation").exists()
    for name in ("patch_index.json", "patches.json", "warnings.json", "data_docs/index.html"):
        assert (report / name).is_file(), name
    assert (report / "gx").is_dir()
    assert str(report / "data_docs" / "index.html") in out.stdout

    # the pipeline's own reports, then another folder again: the default folder is untouched
    out = _cli("--params", str(params), "validate")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (data / "validation" / "data_docs" / "index.html").is_file()
    own = _snapshot(data)
    out = _cli(
        "--params", str(params), "validate", "--patches", str(patches), "--report", str(report)
    )
    assert out.returncode == 0 and _snapshot(data) == own

    # the library entry the stage calls, with explicit folders
    gates = v.quality_gates(patches, report.parent / "library", load_settings(params))
    assert gates.passed and gates.docs == report.parent / "library" / "data_docs" / "index.html"
    assert _snapshot(data) == own


def test_a_damaged_patch_fails_naming_it_and_the_fix_and_touches_nothing_else(other):
    params, data, patches, report = other
    before = _snapshot(data)
    damaged = sorted((patches / "enmap").rglob("*.tif"))[0]
    with rasterio.open(damaged, "r+") as dst:  # a patch whose file lost its nodata tag
        dst.nodata = None
    out = _cli(
        "--params", str(params), "validate", "--patches", str(patches), "--report", str(report)
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert str(damaged.relative_to(patches)) in out.stdout
    assert "expect_column_values_to_not_be_null(nodata)" in out.stdout
    assert f"spectralearth curate --out {patches}" in out.stdout
    assert _snapshot(data) == before


def test_a_folder_without_an_index_is_refused_naming_it(other, tmp_path):
    params, data, _, _ = other
    before = _snapshot(data)
    missing, report = tmp_path / "never-curated", tmp_path / "report"
    out = _cli(
        "--params", str(params), "validate", "--patches", str(missing), "--report", str(report)
    )
    assert out.returncode == 1
    assert str(missing / "index.parquet") in out.stderr
    assert f"spectralearth curate --out {missing}" in out.stderr
    assert not report.exists() and not missing.exists()
    assert _snapshot(data) == before
