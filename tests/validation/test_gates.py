"""Data-quality gates on the curated patches: every blocking expectation is shown failing on a
planted violation, naming itself, the offending rows and the command that fixes it, and
stopping the downstream asset in Dagster; the warning gates fire without stopping anything;
Data Docs are built."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from rasterio.crs import CRS
from rasterio.transform import Affine

from spectralearth import validation as v
from spectralearth.config import load_settings
from spectralearth.patches import curate as patch_curation
from spectralearth.patches import store as patch_store
from spectralearth.patches.store import read_index
from tests.helpers import shared, tiny_params


@pytest.fixture(autouse=True)
def _no_reference_from_the_environment(monkeypatch):
    """Tests choose their reference statistics themselves."""
    monkeypatch.delenv(v.REFERENCE_ENV, raising=False)


def _write_params(folder: Path, archive: Path, **validate) -> Path:
    params = tiny_params(folder / "data")
    params["archive_dir"] = str(archive)
    if validate:
        params["validate"] = validate
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _env(template, archive: Path, folder: Path, **validate):
    patches, products = template
    params = _write_params(folder, archive, **validate)
    settings = load_settings(params)
    shutil.copytree(patches, settings.layout.patches)
    return settings, params, products


@pytest.fixture
def env(template, tiny_archive, tmp_path):
    """Settings over a copy of the curated template; Data Docs off (faster)."""
    return _env(template, tiny_archive, tmp_path / "cfg", data_docs=False)


@pytest.fixture
def env_docs(template, tiny_archive, tmp_path):
    """The same with the params.yaml defaults (Data Docs on)."""
    return _env(template, tiny_archive, tmp_path / "cfg")


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


# --- planted violations of the patch file contract ----------------------------------------


def _rewrite(path: Path, data=None, **profile_changes) -> None:
    with rasterio.open(path) as src:
        arr, profile, tags = src.read(), src.profile, src.tags()
    arr = arr if data is None else data(arr)
    profile.update(count=arr.shape[0], height=arr.shape[1], width=arr.shape[2], dtype=arr.dtype)
    profile.update(profile_changes)
    for key in ("blockxsize", "blockysize", "tiled"):
        profile.pop(key, None)
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        dst.update_tags(**tags)


def _set(value, band=0, row=3, col=4):
    def change(a):
        a = a.copy()
        a[band, row, col] = value
        return a

    return change


def _scaled(path: Path, factor: float) -> None:
    with rasterio.open(path) as src:
        t = src.transform
    _rewrite(path, transform=Affine(t.a * factor, t.b, t.c, t.d, t.e * factor, t.f))


PATCH_DAMAGE = {
    "missing file": (
        lambda p: p.unlink(),
        [("expect_column_values_to_be_in_set", "readable")],
    ),
    "201 bands": (
        lambda p: _rewrite(p, lambda a: a[:201]),
        [("expect_column_values_to_be_in_set", "bands")],
    ),
    "16x16 px": (
        lambda p: _rewrite(p, lambda a: a[:, :16, :16]),
        [
            ("expect_column_values_to_be_between", "height"),
            ("expect_column_values_to_be_between", "width"),
        ],
    ),
    "float32 dtype": (
        lambda p: _rewrite(p, lambda a: a.astype(np.float32)),
        [("expect_column_values_to_be_in_set", "dtype")],
    ),
    "NaN value": (
        lambda p: _rewrite(p, lambda a: _set(np.nan)(a.astype(np.float32))),
        [("expect_column_values_to_be_between", "nan_count")],
    ),
    "nodata pixel": (
        lambda p: _rewrite(p, _set(-32768, band=57)),
        [("expect_column_values_to_be_between", "nodata_pixels")],
    ),
    "no nodata tag": (
        lambda p: _rewrite(p, nodata=None),
        [("expect_column_values_to_not_be_null", "nodata")],
    ),
    "nodata tag 0": (
        lambda p: _rewrite(p, nodata=0),
        [("expect_column_values_to_be_in_set", "nodata")],
    ),
    "value above range": (
        lambda p: _rewrite(p, _set(30000)),
        [("expect_column_values_to_be_between", "max")],
    ),
    "value below range": (
        lambda p: _rewrite(p, _set(-5000)),
        [("expect_column_values_to_be_between", "min")],
    ),
    "web mercator CRS": (
        lambda p: _rewrite(p, crs=CRS.from_epsg(3857)),
        [("expect_column_values_to_match_regex", "crs")],
    ),
    "no CRS": (
        lambda p: _rewrite(p, crs=None),
        [("expect_column_values_to_not_be_null", "crs")],
    ),
    "60 m pixels": (
        lambda p: _scaled(p, 2.0),
        [
            ("expect_column_values_to_be_between", "pixel_size_x"),
            ("expect_column_values_to_be_between", "pixel_size_y"),
        ],
    ),
}


def _keys(suite: dict) -> set[tuple[str, str]]:
    return {
        (e["type"], e["kwargs"].get("column") or ",".join(e["kwargs"].get("column_list", [])))
        for e in suite["expectations"]
    }


# What a failing gate must tell the user to run (the suites' meta.fix).
RECURATE = "spectralearth curate --out"


def test_every_blocking_patch_expectation_has_a_planted_violation():
    covered = {k for _, keys in PATCH_DAMAGE.values() for k in keys}
    assert _keys(v.load_suite_dict("patches")) == covered


def test_patch_table_reads_the_files(env):
    settings = env[0]
    index = read_index(settings.layout.patches)
    table = v.patch_table(settings.layout.patches, index)
    assert len(table) == len(index) and list(table["patch_id"]) == list(index["patch_id"])
    row = table.iloc[0]
    assert (row["bands"], row["height"], row["width"], row["dtype"]) == (202, 32, 32, "int16")
    assert row.nodata_pixels == 0 and row.nan_count == 0 and row.epsg in (32633, 32634)
    assert row.pixel_size_x == row.pixel_size_y == 30.0
    assert np.allclose(row.band_means, index["band_means"].iloc[0], atol=0.01)
    assert v.validate_patches(table, settings.curate).success


@pytest.mark.parametrize("case", sorted(PATCH_DAMAGE))
def test_bad_patch_fails_its_check_and_blocks_the_index(case, env, instance, monkeypatch):
    """A scene whose curation writes a bad patch: the blocking check of its curated_patches
    partition fails naming the expectation and the patch, and patch_index does not run."""
    settings, params, products = env
    damage, failing = PATCH_DAMAGE[case]
    product = products[1]
    curate = patch_curation.curate_scene
    planted = {}

    def bad_curation(product_dir, patches_root, curate_settings, scene_keys=()):
        res = curate(product_dir, patches_root, curate_settings, scene_keys)
        planted["path"] = res.rows["path"].iloc[0]
        damage(Path(patches_root) / planted["path"])
        return res

    monkeypatch.setattr(patch_curation, "curate_scene", bad_curation)
    run = _materialize(instance, params, ["curated_patches", "patch_index"], partition=product.name)
    (evaluation,) = _evaluations(run, "scene_patches_expectations")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    named = set(evaluation.metadata["failed_expectations"].value["patches"])
    assert {f"{t}({c})" for t, c in failing} <= named
    summary = evaluation.metadata["summary"].value
    assert planted["path"] in summary  # the offending row
    assert all(f"{t}({c})" in summary for t, c in failing)  # the expectation
    assert f"{RECURATE} {settings.layout.patches}" in summary  # and the command that fixes it
    assert instance.get_latest_materialization_event(dg.AssetKey("patch_index")) is None
    assert not run.success


def test_good_scene_passes_and_the_index_builds_with_data_docs(env_docs, instance):
    settings, params, products = env_docs
    run = _materialize(
        instance, params, ["curated_patches", "patch_index"], partition=products[1].name
    )
    assert run.success
    (evaluation,) = _evaluations(run, "scene_patches_expectations")
    assert evaluation.passed and evaluation.metadata["failed"].value == 0
    docs = Path(evaluation.metadata["data_docs"].value)
    assert docs == settings.layout.validation / "data_docs" / "index.html" and docs.is_file()
    assert products[1].name in docs.read_text()  # the run is listed under its scene
    assert instance.get_latest_materialization_event(dg.AssetKey("patch_index")) is not None
    (index_eval,) = _evaluations(run, "patch_index_expectations")
    assert index_eval.passed
    report = json.loads(
        (settings.layout.validation / "patches" / f"{products[1].name}.json").read_text()
    )
    assert report["success"] and report["rows"] > 0


# --- planted violations of the index contract ---------------------------------------------


def _duplicate_pair(index: pd.DataFrame) -> pd.DataFrame:
    extra = index.iloc[[0]].copy()
    extra["patch_id"] = "9999999/99999"  # a unique id, so only the pair is duplicated
    return pd.concat([index, extra], ignore_index=True)


def _split_location(index: pd.DataFrame) -> pd.DataFrame:
    counts = index["location_id"].value_counts()
    loc = counts.index[counts > 1][0]  # a revisited location: its rows share one split
    index = index.copy()
    i = index.index[index["location_id"] == loc][0]
    index.loc[i, "split"] = "test" if index.loc[i, "split"] != "test" else "train"
    return index


INDEX_DAMAGE = {
    "duplicate (location, scene)": (
        _duplicate_pair,
        ("expect_compound_columns_to_be_unique", "location_id,scene_id"),
    ),
    "location in two splits": (
        _split_location,
        ("expect_column_values_to_be_between", "splits_per_location"),
    ),
}


@pytest.mark.parametrize("case", sorted(INDEX_DAMAGE))
def test_bad_index_fails_its_check_and_blocks_the_shards(case, env, instance, monkeypatch):
    settings, params, _ = env
    damage, (etype, column) = INDEX_DAMAGE[case]
    build = patch_store.build_index

    def bad_index(patches_root, val_frac, test_frac):
        index = damage(build(patches_root, val_frac, test_frac))
        index.to_parquet(Path(patches_root) / "index.parquet", index=False)
        return index

    monkeypatch.setattr(patch_store, "build_index", bad_index)
    run = _materialize(instance, params, ["patch_index", "band_statistics"])
    (evaluation,) = _evaluations(run, "patch_index_expectations")
    assert not evaluation.passed
    assert f"{etype}({column})" in evaluation.metadata["failed_expectations"].value["patch_index"]
    summary = evaluation.metadata["summary"].value
    assert f"{etype}({column})" in summary and re.search(r"unexpected: \d{7}/\d{5}", summary)
    assert "materialize patch_index" in summary and RECURATE in summary
    assert instance.get_latest_materialization_event(dg.AssetKey("band_statistics")) is None
    assert not run.success


def test_curate_parameter_change_fails_the_index_naming_rows_and_the_fix(env, instance):
    """#15 (c): a `curate:` threshold made stricter on the same data folder (as `dvc exp run -S
    curate.max_cloud_frac=0.01` does): the index check fails naming the expectation, its
    params.yaml threshold, the patches above it and the command that re-curates."""
    settings, params, _ = env
    index = read_index(settings.layout.patches)
    cloudy = index.loc[index["cloud_frac"] > 0.01, "patch_id"].tolist()
    assert cloudy, "the template has no patch with cloud_frac > 0.01: the test proves nothing"
    stricter = yaml.safe_load(params.read_text())
    stricter["curate"]["max_cloud_frac"] = 0.01
    params.write_text(yaml.safe_dump(stricter, sort_keys=False))
    run = _materialize(instance, params, ["patch_index", "band_statistics"])
    (evaluation,) = _evaluations(run, "patch_index_expectations")
    assert not evaluation.passed and not run.success
    summary = evaluation.metadata["summary"].value
    assert "expect_column_values_to_be_between(cloud_frac)" in summary
    assert "curate_max_cloud_frac = 0.01" in summary
    assert all(patch in summary for patch in cloudy)
    assert f"{RECURATE} {settings.layout.patches}" in summary
    assert "materialize curated_patches" in summary


def _good_index(template) -> pd.DataFrame:
    return read_index(template[0])


# Every expectation of the index suite (with the params thresholds) and a row that breaks it.
INDEX_ROW_DAMAGE = {
    ("expect_table_row_count_to_be_between", ""): lambda d: d.iloc[:0],
    ("expect_column_values_to_be_unique", "patch_id"): lambda d: d.assign(
        patch_id=[d["patch_id"].iloc[0]] * len(d)
    ),
    ("expect_column_values_to_not_be_null", "location_id"): lambda d: _put(d, "location_id", None),
    ("expect_column_values_to_not_be_null", "scene_id"): lambda d: _put(d, "scene_id", None),
    ("expect_column_values_to_not_be_null", "datetime"): lambda d: _put(d, "datetime", pd.NaT),
    ("expect_column_values_to_be_between", "location_id"): lambda d: _put(d, "location_id", 0),
    ("expect_column_values_to_be_between", "scene_id"): lambda d: _put(d, "scene_id", 100000),
    ("expect_column_values_to_match_regex", "patch_id"): lambda d: _put(d, "patch_id", "1/1"),
    ("expect_column_values_to_be_in_set", "split"): lambda d: _put(d, "split", "holdout"),
    ("expect_column_values_to_be_between", "valid_frac"): lambda d: _put(d, "valid_frac", 0.9),
    ("expect_column_values_to_be_between", "cloud_frac"): lambda d: _put(d, "cloud_frac", 0.5),
    ("expect_column_values_to_be_between", "snow_frac"): lambda d: _put(d, "snow_frac", 0.5),
    ("expect_column_values_to_be_between", "mean_reflectance"): lambda d: _put(
        d, "mean_reflectance", -1.0
    ),
    ("expect_column_values_to_be_in_set", "n_bands"): lambda d: _put(d, "n_bands", 224),
    ("expect_compound_columns_to_be_unique", "location_id,scene_id"): _duplicate_pair,
    ("expect_column_values_to_be_between", "splits_per_location"): _split_location,
}


def _put(df: pd.DataFrame, column: str, value) -> pd.DataFrame:
    df = df.copy()
    if value is None:
        df[column] = df[column].astype("Int64")
    df.loc[df.index[-1], column] = value
    return df


def test_every_blocking_index_expectation_has_a_planted_violation(template, env):
    """Each expectation fails on its planted row and the summary says what to run."""
    settings = env[0]
    assert _keys(v.load_suite_dict("patch_index")) == set(INDEX_ROW_DAMAGE)
    index = _good_index(template)
    assert v.validate_patch_index(index, settings).success
    curated = settings.layout.patches
    for (etype, column), damage in INDEX_ROW_DAMAGE.items():
        report = v.validate_patch_index(
            damage(index), settings, fix_context={"curated": str(curated)}
        )
        named = {(r.expectation, r.column or "") for r in report.failed}
        assert (etype, column) in named, (etype, column, report.summary())
        failed = next(
            r for r in report.failed if (r.expectation, r.column or "") == (etype, column)
        )
        assert failed.fix and f"{RECURATE} {curated}" in failed.fix, (etype, column, failed.fix)
        assert failed.name in report.summary() and f"fix: {failed.fix}" in report.summary()


# --- warnings -----------------------------------------------------------------------------


def test_drift_warning_fires_on_synthetic_data_and_does_not_block(env, instance, monkeypatch):
    settings, params, _ = env
    monkeypatch.setenv(v.REFERENCE_ENV, str(shared("spectralearth_reference")))
    run = _materialize(instance, params, ["patch_index", "band_statistics"])
    assert run.success
    (warning,) = _evaluations(run, "patch_index_warnings")
    assert not warning.passed and warning.severity == dg.AssetCheckSeverity.WARN
    meta = warning.metadata
    assert meta["band_drift_max_abs_drift_sigma"].value > 0.25
    assert "expect_column_values_to_be_between(drift_sigma)" in meta["summary"].value
    assert (_evaluations(run, "patch_index_expectations")[0]).passed
    assert instance.get_latest_materialization_event(dg.AssetKey("band_statistics"))


def test_drift_against_a_given_reference_and_fallback_to_own_stats(env, template):
    settings = env[0]
    index = _good_index(template)
    means = v.dataset_band_means(index)
    std = np.full(202, 1000.0)
    same = v.Reference(means, std, "own")
    assert v.validate_band_drift(index, same, settings).success
    shifted = v.Reference(means + 500.0, std, "shifted")
    report = v.validate_band_drift(index, shifted, settings)
    assert not report.success and not report.blocking
    assert report.observed["bands_beyond_tolerance"] == 202
    assert "validate_max_band_drift_sigma = 0.25" in report.summary()
    assert "validate.reference_stats" in report.summary()  # what to change if it is expected
    # no reference anywhere: skipped, and says so
    gate, curated = v.GateSettings.of(settings), settings.layout.patches
    assert v.resolve_reference(gate, curated) is None
    skipped = v.validate_band_drift(index, None, settings)
    assert skipped.success and "no reference" in skipped.summary()
    # the curated folder's own band statistics of an earlier run are the fallback
    own = curated / "band_stats.json"
    own.write_text(json.dumps({"mean": means.tolist(), "std": std.tolist()}))
    ref = v.resolve_reference(gate, curated)
    assert ref is not None and ref.source == str(own)


def test_reference_from_params_and_multitemporal_minimum(env, tmp_path, tiny_archive):
    settings, _, _ = env
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    np.save(ref_dir / "mu.npy", np.full(202, 1500, np.float32))
    np.save(ref_dir / "sigma.npy", np.full(202, 1000, np.float32))
    params = _write_params(
        tmp_path / "strict",
        tiny_archive,
        reference_stats=str(ref_dir),
        min_multitemporal_share=0.9,
        data_docs=False,
    )
    strict = load_settings(params)
    assert strict.validate.reference_stats == ref_dir
    assert strict.validate.min_multitemporal_share == 0.9
    index = read_index(settings.layout.patches)
    report_dir = tmp_path / "reports"
    drift, multi = v.validate_warnings(settings.layout.patches, report_dir, strict, index=index)
    assert drift.observed["reference"] == str(ref_dir)
    assert not multi.success and not multi.blocking
    assert 0 < multi.observed["multitemporal_share"] < 0.9
    assert "expect_column_mean_to_be_between(multitemporal)" in multi.summary()
    assert "validate_min_multitemporal_share = 0.9" in multi.summary()
    assert json.loads((report_dir / "warnings.json").read_text())[1]["success"] is False


def test_absent_reference_skips_the_drift_warning_and_says_why(env, tmp_path, monkeypatch):
    settings, params, _ = env
    monkeypatch.setenv(v.REFERENCE_ENV, str(tmp_path / "not-there"))
    settings = load_settings(params)  # the environment is read with params.yaml
    drift, multi = v.validate_warnings(settings.layout.patches, tmp_path / "reports", settings)
    assert drift.success and "not-there" in drift.summary() and multi.success


def test_scene_without_patches_passes(env, tmp_path):
    settings = env[0]
    curated, reports = settings.layout.patches, tmp_path / "reports"
    pd.DataFrame().to_parquet(
        curated / "scenes" / "EMPTY.parquet"
    )  # what curation writes for 0 kept
    report = v.validate_scene(curated, "EMPTY", reports, settings)
    assert report.success and report.rows == 0
    assert json.loads((reports / "patches" / "EMPTY.json").read_text())["success"]
    with pytest.raises(FileNotFoundError, match="no index fragment for scene NEVER-CURATED"):
        v.validate_scene(curated, "NEVER-CURATED", reports, settings)
    assert not (reports / "patches" / "NEVER-CURATED.json").exists()
    with pytest.raises(ValueError, match="not a plain name"):
        v.validate_scene(curated, "../EMPTY", reports, settings)


def test_expectations_override_folder_falls_back_to_the_repo_suites(tmp_path, monkeypatch):
    strict = v.load_suite_dict("patches")
    strict["expectations"].append(
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 10**9}}
    )
    (tmp_path / "patches.json").write_text(json.dumps(strict))
    monkeypatch.setenv("SPECTRALEARTH_EXPECTATIONS", str(tmp_path))
    override = v.load_suite_dict("patches")
    assert override["expectations"] == strict["expectations"]
    assert override["meta"]["source"] == str(tmp_path / "patches.json")
    assert v.load_suite_dict("patch_index")["name"] == "patch_index"  # from expectations/
    with pytest.raises(FileNotFoundError):
        v.load_suite_dict("no_such_suite")


@pytest.mark.parametrize(
    "validate, message",
    [
        ({"max_drift": 1}, r"\[validate\]: unknown keys \['max_drift'\]"),
        ({"max_band_drift_sigma": "0.25"}, "max_band_drift_sigma: expected a number, got '0.25'"),
        ({"min_multitemporal_share": 1.5}, r"min_multitemporal_share: 1.5 must lie in \[0, 1\]"),
        ({"data_docs": "yes"}, "data_docs: expected true or false, got 'yes'"),
    ],
)
def test_bad_validate_section_is_refused_at_load(tmp_path, tiny_archive, validate, message):
    with pytest.raises(ValueError, match=message):
        load_settings(_write_params(tmp_path, tiny_archive, **validate))


def test_quality_gates_on_the_whole_dataset(env_docs, tmp_path):
    settings = env_docs[0]
    reports_dir = tmp_path / "reports"
    gates = v.quality_gates(settings.layout.patches, reports_dir, settings)
    assert set(gates) == {"patch_index", "patches", "band_drift", "multitemporal"}
    assert gates.passed and all(r.success for r in gates.values() if r.blocking)
    assert gates["patches"].rows == len(read_index(settings.layout.patches))
    assert gates.docs == reports_dir / "data_docs" / "index.html" and gates.docs.is_file()
    for name in ("patch_index.json", "patches.json", "warnings.json"):
        assert (reports_dir / name).is_file()
    assert "every blocking gate passed" in gates.summary()
    meta = gates.metadata()
    assert meta["passed"] is True and meta["failed"] == 0 and meta["evaluated"] > 30


# --- helpers ------------------------------------------------------------------------------


def _materialize(instance, params: Path, assets: list[str], partition: str | None = None):
    """Materialize ``assets`` (with their checks) from the project's definitions."""
    from dagster_project.checks import quality_checks
    from dagster_project.definitions import defs
    from dagster_project.resources import SpectralearthSettings

    if partition:
        instance.add_dynamic_partitions("scenes", [partition])
    return dg.materialize(
        [*defs.assets, *quality_checks],
        selection=dg.AssetSelection.assets(*assets),
        partition_key=partition,
        instance=instance,
        resources={"settings": SpectralearthSettings(params_file=str(params))},
        raise_on_error=False,
    )


def _evaluations(run, check_name: str):
    return [e for e in run.get_asset_check_evaluations() if e.check_name == check_name]
