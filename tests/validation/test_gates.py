"""Data-quality gates on the curated patches: every blocking expectation is shown failing on a
planted violation, naming itself, and stopping the downstream asset in Dagster; the warning
gates fire without stopping anything; Data Docs are built."""

from __future__ import annotations

import json
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
from spectralearth.stages.curate import curate_archive
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


@pytest.fixture(scope="module")
def template(tiny_archive, tmp_path_factory):
    """The tiny archive curated once (patches, registry, index); tests work on copies."""
    folder = tmp_path_factory.mktemp("gates")
    settings = load_settings(_write_params(folder, tiny_archive))
    products = sorted(p for p in tiny_archive.iterdir() if p.is_dir())
    curate_archive(products, settings.layout.patches, settings.curate, log=lambda *_: None)
    return settings.layout.patches, products


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
            ("expect_column_values_to_be_in_set", "height"),
            ("expect_column_values_to_be_in_set", "width"),
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


def test_every_blocking_patch_expectation_has_a_planted_violation(env):
    settings = env[0]
    suite = v._with(v.load_suite_dict("patches"), v.patch_expectations(settings.curate))
    covered = {k for _, keys in PATCH_DAMAGE.values() for k in keys}
    assert _keys(suite) == covered


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
    assert planted["path"] in evaluation.metadata["summary"].value
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
    run = _materialize(instance, params, ["patch_index", "training_shards"])
    (evaluation,) = _evaluations(run, "patch_index_expectations")
    assert not evaluation.passed
    assert f"{etype}({column})" in evaluation.metadata["failed_expectations"].value["patch_index"]
    assert instance.get_latest_materialization_event(dg.AssetKey("training_shards")) is None
    assert not run.success


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
    settings = env[0]
    suite = v._with(v.load_suite_dict("patch_index"), v.threshold_expectations(settings.curate))
    assert _keys(suite) == set(INDEX_ROW_DAMAGE)
    index = _good_index(template)
    assert v.validate_patch_index(index, settings.curate).success
    for (etype, column), damage in INDEX_ROW_DAMAGE.items():
        report = v.validate_patch_index(damage(index), settings.curate)
        named = {(r["expectation"], r["column"] or "") for r in report.failed}
        assert (etype, column) in named, (etype, column, report.summary())


# --- warnings -----------------------------------------------------------------------------


def test_drift_warning_fires_on_synthetic_data_and_does_not_block(env, instance, monkeypatch):
    settings, params, _ = env
    monkeypatch.setenv(v.REFERENCE_ENV, str(shared("spectralearth_reference")))
    run = _materialize(instance, params, ["patch_index", "training_shards"])
    assert run.success
    (warning,) = _evaluations(run, "patch_index_warnings")
    assert not warning.passed and warning.severity == dg.AssetCheckSeverity.WARN
    meta = warning.metadata
    assert meta["band_drift_max_abs_drift_sigma"].value > 0.25
    assert "expect_column_values_to_be_between(drift_sigma)" in meta["summary"].value
    assert (_evaluations(run, "patch_index_expectations")[0]).passed
    assert instance.get_latest_materialization_event(dg.AssetKey("training_shards"))


def test_drift_against_a_given_reference_and_fallback_to_own_stats(env, template):
    settings = env[0]
    index = _good_index(template)
    means = v.dataset_band_means(index)
    std = np.full(202, 1000.0)
    same = v.Reference(means, std, "own")
    assert v.validate_band_drift(index, same, 0.25).success
    shifted = v.Reference(means + 500.0, std, "shifted")
    report = v.validate_band_drift(index, shifted, 0.25)
    assert not report.success and not report.blocking
    assert report.observed["bands_beyond_tolerance"] == 202
    # no reference anywhere: skipped, and says so
    assert v.resolve_reference(settings) is None
    skipped = v.validate_band_drift(index, None, 0.25)
    assert skipped.success and "no reference" in skipped.summary()
    # the pipeline's own band statistics of an earlier run are the fallback
    settings.layout.curated.stats.parent.mkdir(parents=True, exist_ok=True)
    settings.layout.curated.stats.write_text(
        json.dumps({"mean": means.tolist(), "std": std.tolist()})
    )
    ref = v.resolve_reference(settings)
    assert ref is not None and ref.source == str(settings.layout.curated.stats)


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
    q = v.QualitySettings.from_settings(strict)
    assert q.reference_stats == ref_dir and q.min_multitemporal_share == 0.9
    index = read_index(settings.layout.patches)
    drift, multi = v.validate_warnings(strict, index=index)
    assert drift.observed["reference"] == str(ref_dir)
    assert not multi.success and not multi.blocking
    assert 0 < multi.observed["multitemporal_share"] < 0.9
    assert "expect_column_mean_to_be_between(multitemporal)" in multi.summary()
    assert (
        json.loads((strict.layout.validation / "warnings.json").read_text())[1]["success"] is False
    )


def test_absent_reference_skips_the_drift_warning_and_says_why(env, tmp_path, monkeypatch):
    settings = env[0]
    monkeypatch.setenv(v.REFERENCE_ENV, str(tmp_path / "not-there"))
    drift, multi = v.validate_warnings(settings)
    assert drift.success and "not-there" in drift.summary() and multi.success


def test_scene_without_patches_passes(env):
    settings = env[0]
    scenes = settings.layout.patches / "scenes"
    pd.DataFrame().to_parquet(scenes / "EMPTY.parquet")  # what curation writes for 0 kept
    report = v.validate_scene(settings, "EMPTY")
    assert report.success and report.rows == 0
    with pytest.raises(FileNotFoundError, match="no index fragment"):
        v.validate_scene(settings, "NEVER-CURATED")


def test_expectations_override_folder_falls_back_to_the_repo_suites(tmp_path, monkeypatch):
    strict = v.load_suite_dict("patches")
    strict["expectations"].append(
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 10**9}}
    )
    (tmp_path / "patches.json").write_text(json.dumps(strict))
    monkeypatch.setenv("SPECTRALEARTH_EXPECTATIONS", str(tmp_path))
    assert v.load_suite_dict("patches") == strict
    assert v.load_suite_dict("patch_index")["name"] == "patch_index"  # from expectations/
    with pytest.raises(FileNotFoundError):
        v.load_suite_dict("no_such_suite")


def test_unknown_validate_key_is_rejected(tmp_path, tiny_archive):
    settings = load_settings(_write_params(tmp_path, tiny_archive, max_drift=1))
    with pytest.raises(ValueError, match="unknown keys"):
        v.QualitySettings.from_settings(settings)


def test_quality_gates_on_the_whole_dataset(env_docs):
    settings = env_docs[0]
    reports = v.quality_gates(settings)
    assert set(reports) == {"patch_index", "patches", "band_drift", "multitemporal"}
    assert all(r.success for r in reports.values() if r.blocking)
    assert reports["patches"].rows == len(read_index(settings.layout.patches))
    assert (settings.layout.validation / "data_docs" / "index.html").is_file()


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
