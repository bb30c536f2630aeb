"""Data Docs of a report folder: built once per run, not per scene check, and bounded: the
latest result of each (suite, run name) is kept, so reruns do not grow the site."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from spectralearth import validation as v
from spectralearth.config import load_settings
from spectralearth.validation.docs import stored_results
from tests.helpers import tiny_params


@pytest.fixture
def curated(template, tiny_archive, tmp_path):
    """(settings with Data Docs on, a copy of the curated template, its scene names)."""
    params = tiny_params(tmp_path / "data")
    params["archive_dir"] = str(tiny_archive)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    folder = tmp_path / "curated"
    shutil.copytree(template[0], folder)
    scenes = sorted(p.stem for p in (folder / "scenes").glob("*.parquet"))
    return load_settings(tmp_path / "params.yaml"), folder, scenes


def _site(report: Path) -> tuple[list[str], int]:
    """The site's validation pages (suite/run name, without the run time) and the number of
    validation links on its index page."""
    docs = report / "data_docs"
    pages = sorted(
        "/".join(p.relative_to(docs / "validations").parts[:2])
        for p in (docs / "validations").rglob("*.html")
    )
    links = len(re.findall(r"validations/[^'\"]+?\.html", (docs / "index.html").read_text()))
    return pages, links


def test_two_runs_leave_the_same_site(curated, tmp_path):
    settings, folder, _ = curated
    report = tmp_path / "report"
    first = v.quality_gates(folder, report, settings)
    assert first.docs == report / "data_docs" / "index.html" and first.docs.is_file()
    pages, links = _site(report)
    assert pages == [
        "multitemporal/multitemporal",
        "patch_index/patch_index",
        "patches/all_patches",
    ]
    assert links == len(pages)
    v.quality_gates(folder, report, settings)
    assert _site(report) == (pages, links)
    assert [p.name for p in report.iterdir() if p.name.startswith(".data_docs")] == []
    assert stored_results(report) == [
        ("multitemporal", "multitemporal"),
        ("patch_index", "patch_index"),
        ("patches", "all_patches"),
    ]  # band_drift is skipped without reference statistics


def test_scene_checks_record_and_the_index_gate_builds_once(curated, tmp_path):
    settings, folder, scenes = curated
    report = tmp_path / "report"
    for scene in scenes[:2]:
        result = v.validate_scene(folder, scene, report, settings)
        assert result.success and result.docs == report / "data_docs" / "index.html"
    assert not (report / "data_docs").exists()  # a scene check does not build the site
    v.validate_scene(folder, scenes[0], report, settings)  # a rerun replaces its result
    index = v.validate_index(folder, report, settings)
    assert index.success and index.docs.is_file()
    pages, _ = _site(report)
    assert pages == sorted(
        ["patch_index/patch_index", *(f"patches/{scene}" for scene in scenes[:2])]
    )
    text = index.docs.read_text()
    assert all(scene in text for scene in scenes[:2])

    # a scene removed from the curated folder leaves the site at the next index gate
    (folder / "scenes" / f"{scenes[1]}.parquet").rename(tmp_path / "removed.parquet")
    v.validate_index(folder, report, settings)
    assert _site(report)[0] == ["patch_index/patch_index", f"patches/{scenes[0]}"]


def test_data_docs_off_writes_no_gx_project(curated, tmp_path):
    settings, folder, _ = curated
    report = tmp_path / "report"
    gates = v.quality_gates(folder, report, settings, data_docs=False)
    assert gates.passed and gates.docs is None
    assert sorted(p.name for p in report.iterdir()) == [
        "patch_index.json",
        "patches.json",
        "warnings.json",
    ]


def test_index_gates_run_the_index_suites_and_build_the_docs_once(curated, tmp_path):
    """What a Dagster multi-asset check on patch_index calls: blocking index suite and the
    warnings, one Data Docs build."""
    settings, folder, _ = curated
    report = tmp_path / "report"
    gates = v.index_gates(folder, report, settings)
    assert set(gates) == {"patch_index", "band_drift", "multitemporal"} and gates.passed
    assert gates.docs.is_file() and gates["patch_index"].docs == gates.docs
    assert _site(report)[0] == ["multitemporal/multitemporal", "patch_index/patch_index"]
    assert (report / "patch_index.json").is_file() and (report / "warnings.json").is_file()
    assert not (report / "patches.json").exists()
