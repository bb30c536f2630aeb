"""Data-quality gates: Great Expectations 1.x suites (expectations/*.json) on the curated data.

Four suites, each run on a table the pipeline derives from its outputs:

============== ======================================== ===========================================
suite          table (one row per ...)                  gate
============== ======================================== ===========================================
patches        patch file (``patch_table``: read with   blocking: shape (202, P, P), int16, nodata
               rasterio)                                tag -32768, no nodata pixel, no NaN, values
                                                        in [-1000, 16000], UTM CRS, 30 m pixels
patch_index    index row (``index_table``)              blocking: unique (location, scene) pairs,
                                                        every location in exactly one split, ids,
                                                        params.yaml curation thresholds
band_drift     band (``band_drift_table``)              warning: per-band mean of the patches
                                                        within ``max_band_drift_sigma`` reference
                                                        standard deviations of the reference mean
multitemporal  location (``location_table``)            warning: share of locations seen by more
                                                        than one scene >= ``min_multitemporal_share``
============== ======================================== ===========================================

The suite files hold the contract; thresholds that live in params.yaml (``curate`` patch size
and nodata/cloud/snow filters, the ``validate`` section) are appended at validation time, so a
suite and the curation can never disagree.

Every validation can be recorded in a file Great Expectations project under
``<data_dir>/validation/gx`` whose Data Docs site is ``<data_dir>/validation/data_docs/
index.html`` (``data_docs_index``); without ``gx_dir`` an ephemeral context is used (fast, no
docs). GX analytics and progress bars are off.

Reference statistics for the drift warning (202 per-band means and stds, reflectance x 10000)
come, in this order, from: an argument; the ``SPECTRALEARTH_REFERENCE_STATS`` environment
variable; ``validate.reference_stats`` in params.yaml (a folder with ``mu.npy`` and
``sigma.npy``, or a ``band_stats.json``); the pipeline's own ``band_stats.json`` of an earlier
run (then the warning measures drift between runs). With none, the drift gate is skipped and
says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spectralearth.config import CurateSettings, Settings, project_root
from spectralearth.io import atomic_path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

NODATA = -32768
N_BANDS = 202
REFERENCE_ENV = "SPECTRALEARTH_REFERENCE_STATS"
DOCS_SITE = "spectralearth"
# rows of a failed expectation named in the report (GX partial_unexpected_index_list)
MAX_NAMED_ROWS = 20

PATCH_COLUMNS = [
    "path",
    "readable",
    "error",
    "bands",
    "height",
    "width",
    "dtype",
    "nodata",
    "nodata_pixels",
    "nan_count",
    "min",
    "max",
    "epsg",
    "crs",
    "pixel_size_x",
    "pixel_size_y",
    "band_means",
]


# --- settings and reference statistics ----------------------------------------------------


@dataclass(frozen=True)
class QualitySettings:
    """The ``validate`` section of params.yaml (all keys optional; these are the defaults)."""

    reference_stats: Path | None = None
    max_band_drift_sigma: float = 0.25
    min_multitemporal_share: float = 0.1
    data_docs: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> QualitySettings:
        raw = dict((settings.raw or {}).get("validate") or {})
        known = {"reference_stats", "max_band_drift_sigma", "min_multitemporal_share", "data_docs"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"params.yaml [validate]: unknown keys {sorted(unknown)}")
        ref = os.environ.get(REFERENCE_ENV) or raw.get("reference_stats")
        if ref:
            ref = Path(ref)
            if not ref.is_absolute():
                ref = settings.params_file.parent / ref
        return cls(
            reference_stats=ref or None,
            max_band_drift_sigma=float(raw.get("max_band_drift_sigma", cls.max_band_drift_sigma)),
            min_multitemporal_share=float(
                raw.get("min_multitemporal_share", cls.min_multitemporal_share)
            ),
            data_docs=bool(raw.get("data_docs", cls.data_docs)),
        )


@dataclass(frozen=True)
class Reference:
    """Per-band mean and std (reflectance x 10000) to measure drift against."""

    mean: np.ndarray
    std: np.ndarray
    source: str


def load_reference(path: str | os.PathLike) -> Reference:
    """A folder with ``mu.npy``/``sigma.npy`` (SpectralEarth) or a ``band_stats.json``."""
    path = Path(path)
    if path.is_dir():
        mean, std = np.load(path / "mu.npy"), np.load(path / "sigma.npy")
    elif path.suffix == ".json" and path.is_file():
        stats = json.loads(path.read_text())
        mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
    else:
        raise FileNotFoundError(
            f"reference statistics not found: {path} (want a folder with mu.npy and sigma.npy, "
            "or a band_stats.json)"
        )
    mean, std = np.asarray(mean, np.float64).ravel(), np.asarray(std, np.float64).ravel()
    if mean.shape != (N_BANDS,) or std.shape != (N_BANDS,) or not (std > 0).all():
        raise ValueError(f"{path}: want {N_BANDS} means and {N_BANDS} positive stds")
    return Reference(mean, std, str(path))


def resolve_reference(
    settings: Settings, reference: Reference | str | os.PathLike | None = None
) -> Reference | None:
    """The drift reference: argument > env var > params.yaml > own band_stats.json > None."""
    if isinstance(reference, Reference):
        return reference
    if reference is not None:
        return load_reference(reference)
    configured = QualitySettings.from_settings(settings).reference_stats
    if configured is not None:
        return load_reference(configured)
    if settings.layout.curated.stats.is_file():
        return load_reference(settings.layout.curated.stats)
    return None


# --- reports ------------------------------------------------------------------------------


@dataclass
class ValidationReport:
    suite: str
    success: bool
    results: list[dict]
    blocking: bool = True
    rows: int | None = None
    docs: Path | None = None
    observed: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if not r["success"]]

    @property
    def failed_expectations(self) -> list[str]:
        return [f"{r['expectation']}({r.get('column') or ''})" for r in self.failed]

    def summary(self) -> str:
        if self.observed.get("skipped"):
            return f"{self.suite}: skipped: {self.observed['skipped']}"
        if self.success:
            return f"{self.suite}: all {len(self.results)} expectations passed"
        parts = []
        for r in self.failed:
            rows = r.get("unexpected_rows") or []
            where = f" at {', '.join(map(str, rows[:3]))}" + (" ..." if len(rows) > 3 else "")
            parts.append(f"{r['expectation']}({r.get('column') or ''}){where if rows else ''}")
        return f"{self.suite}: {len(self.failed)} of {len(self.results)} failed: " + ", ".join(
            parts
        )

    def as_dict(self) -> dict:
        return {
            "suite": self.suite,
            "success": self.success,
            "blocking": self.blocking,
            "rows": self.rows,
            "docs": str(self.docs) if self.docs else None,
            "observed": self.observed,
            "results": self.results,
        }

    def write(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.as_dict(), indent=1, default=str))


# --- suites -------------------------------------------------------------------------------


def expectations_dir() -> Path:
    env = os.environ.get("SPECTRALEARTH_EXPECTATIONS")
    return Path(env) if env else project_root() / "expectations"


def load_suite_dict(name: str, directory: Path | None = None) -> dict:
    """``<name>.json`` from ``directory``, else ``$SPECTRALEARTH_EXPECTATIONS`` (which
    overrides the suites it holds), else the repository's ``expectations/``."""
    candidates = [directory] if directory else [expectations_dir()]
    if directory is None and os.environ.get("SPECTRALEARTH_EXPECTATIONS"):
        candidates.append(project_root() / "expectations")
    for folder in candidates:
        path = Path(folder) / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"expectation suite not found: {Path(candidates[0]) / f'{name}.json'}")


def _with(suite: dict, extra: list[dict]) -> dict:
    return {**suite, "expectations": list(suite["expectations"]) + extra}


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


def patch_expectations(settings: CurateSettings) -> list[dict]:
    """Patch size and nodata limit from params.yaml [curate] (max_nodata_frac 0 = no nodata
    pixel, SpectralEarth's rule)."""
    p = settings.patch_size
    max_nodata = math.floor(settings.max_nodata_frac * p * p + 1e-9)
    return [
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": c, "value_set": [p]}}
        for c in ("height", "width")
    ] + [
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "nodata_pixels", "min_value": 0, "max_value": max_nodata},
        }
    ]


# --- Great Expectations runs and Data Docs ------------------------------------------------


def data_docs_index(gx_dir: Path) -> Path:
    """Where the Data Docs site of the GX project in ``gx_dir`` has its index page."""
    return Path(gx_dir) / "data_docs" / "index.html"


@contextlib.contextmanager
def _locked(gx_dir: Path) -> Iterator[None]:
    """One writer at a time on the GX project (partition checks may run in parallel)."""
    gx_dir.mkdir(parents=True, exist_ok=True)
    with open(gx_dir / ".gx.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _file_context(gx_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="file", project_root_dir=str(gx_dir))
    if ctx.config.analytics_enabled is not False:
        ctx.enable_analytics(False)
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    sites = dict(ctx.get_config().data_docs_sites or {})
    if DOCS_SITE not in sites:
        ctx.add_data_docs_site(
            DOCS_SITE,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                # relative to <gx_dir>/gx: the site moves with the data folder
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": "../data_docs/",
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    for name in sites:
        if name != DOCS_SITE:
            ctx.delete_data_docs_site(name)
    return ctx


def _get_or_add(get, add, name: str):
    try:
        return get(name)
    except (KeyError, LookupError):
        return add(name)


def _result_rows(r, index_column: str | None) -> dict:
    res = r.result or {}
    cfg = r.expectation_config
    column = cfg.kwargs.get("column") or ",".join(cfg.kwargs.get("column_list") or [])
    rows = None
    if index_column and not r.success:
        listed = res.get("partial_unexpected_index_list") or res.get("unexpected_index_list")
        if listed:
            rows = [d.get(index_column) for d in listed if isinstance(d, dict)][:MAX_NAMED_ROWS]
    out = {
        "expectation": cfg.type,
        "column": column or None,
        "success": bool(r.success),
        "unexpected_count": res.get("unexpected_count"),
        "observed_value": str(res.get("observed_value", "")),
    }
    if rows:
        out["unexpected_rows"] = [str(x) for x in rows]
    message = _exception_message(r.exception_info)
    if message:
        out["exception"] = message
    return out


def _exception_message(info) -> str | None:
    """GX's exception_info is flat or keyed by metric; the first message, if any."""
    if not isinstance(info, dict):
        return None
    if info.get("exception_message") and info.get("raised_exception", True):
        return str(info["exception_message"])
    for value in info.values():
        if isinstance(value, dict) and value.get("exception_message"):
            return str(value["exception_message"])
    return None


def validate_frame(
    df: pd.DataFrame,
    suite: dict,
    *,
    gx_dir: Path | None = None,
    run_name: str | None = None,
    index_column: str | None = None,
    blocking: bool = True,
) -> ValidationReport:
    """Run a suite (GX JSON dict) on a DataFrame.

    Without ``gx_dir``: an ephemeral context, nothing written. With it: the file project
    ``<gx_dir>/gx`` stores the suite and the result and updates the Data Docs site
    (``data_docs_index(gx_dir)``) through a checkpoint; ``run_name`` labels the run there.
    Failed expectations name up to 20 offending rows by ``index_column``.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    table = pd.DataFrame(df.drop(columns=[c for c in ("geometry",) if c in df.columns]))
    result_format: dict = {"result_format": "SUMMARY"}
    if index_column and index_column in table.columns:
        result_format["unexpected_index_column_names"] = [index_column]
    else:
        index_column = None
    name = suite["name"]
    docs = None
    if gx_dir is None:
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch_def = (
            ctx.data_sources.add_pandas("frames")
            .add_dataframe_asset(name)
            .add_batch_definition_whole_dataframe("all")
        )
        gx_suite = ctx.suites.add(gx.ExpectationSuite(**suite))
        batch = batch_def.get_batch(batch_parameters={"dataframe": table})
        res = batch.validate(gx_suite, result_format=result_format)
    else:
        gx_dir = Path(gx_dir)
        with _locked(gx_dir):
            ctx = _file_context(gx_dir)
            source = _get_or_add(ctx.data_sources.get, ctx.data_sources.add_pandas, "frames")
            asset = _get_or_add(source.get_asset, source.add_dataframe_asset, name)
            batch_def = _get_or_add(
                asset.get_batch_definition, asset.add_batch_definition_whole_dataframe, "all"
            )
            gx_suite = ctx.suites.add_or_update(gx.ExpectationSuite(**suite))
            vd = ctx.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=name, data=batch_def, suite=gx_suite)
            )
            checkpoint = ctx.checkpoints.add_or_update(
                gx.Checkpoint(
                    name=name,
                    validation_definitions=[vd],
                    actions=[
                        gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[DOCS_SITE])
                    ],
                    result_format=result_format,
                )
            )
            cp_result = checkpoint.run(
                batch_parameters={"dataframe": table},
                run_id=RunIdentifier(run_name=run_name or name),
            )
            (res,) = cp_result.run_results.values()
            docs = data_docs_index(gx_dir)
    results = [_result_rows(r, index_column) for r in res.results]
    return ValidationReport(
        name, bool(res.success), results, blocking=blocking, rows=len(table), docs=docs
    )


# --- tables -------------------------------------------------------------------------------


def _patch_row(path: Path) -> dict:
    import rasterio

    row: dict = {c: None for c in PATCH_COLUMNS}
    row["readable"] = False
    try:
        with rasterio.open(path) as src:
            data = src.read()
            crs, transform, nodata = src.crs, src.transform, src.nodata
    except Exception as exc:  # a missing or broken file is a failed row, not a crash
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    bands, height, width = data.shape
    is_nodata = data == NODATA
    if np.issubdtype(data.dtype, np.floating):
        is_nan = np.isnan(data)
        nan_count = int(is_nan.sum())
    else:
        is_nan = np.zeros_like(is_nodata)
        nan_count = 0
    valid = ~(is_nodata | is_nan)
    n_valid = valid.sum(axis=(1, 2))
    sums = np.where(valid, data, 0).sum(axis=(1, 2), dtype=np.float64)
    means = np.divide(sums, n_valid, out=np.full(bands, np.nan), where=n_valid > 0)
    values = data[valid]
    epsg = crs.to_epsg() if crs else None
    row.update(
        readable=True,
        bands=int(bands),
        height=int(height),
        width=int(width),
        dtype=str(data.dtype),
        nodata=None if nodata is None or math.isnan(nodata) else float(nodata),
        nodata_pixels=int(is_nodata.any(axis=0).sum()),
        nan_count=nan_count,
        min=float(values.min()) if values.size else None,
        max=float(values.max()) if values.size else None,
        epsg=epsg,
        crs=f"EPSG:{epsg}" if epsg else (crs.to_string() if crs else None),
        pixel_size_x=float(math.hypot(transform.a, transform.d)),
        pixel_size_y=float(math.hypot(transform.b, transform.e)),
        band_means=[float(x) for x in means],
    )
    return row


def patch_table(
    patches_root: str | os.PathLike, rows: pd.DataFrame | Iterable[str]
) -> pd.DataFrame:
    """One row per patch file with the properties the ``patches`` suite checks.

    ``rows``: index rows (a ``path`` column relative to ``patches_root``; ``patch_id``,
    ``location_id``, ``scene_id`` are carried over) or relative paths. Values are read from
    the files (nodata pixels = pixels with any band at -32768; min/max/band means over the
    valid values), so the table shows what is on disk, not what the index claims.
    """
    root = Path(patches_root)
    if isinstance(rows, pd.DataFrame):
        frame = pd.DataFrame(rows)
        if "path" not in frame.columns:
            if len(frame):
                raise ValueError("patch_table: rows need a 'path' column")
            frame = pd.DataFrame({"path": pd.Series(dtype=str)})  # a scene with no patches
    else:
        frame = pd.DataFrame({"path": list(rows)})
    keep = [c for c in ("patch_id", "location_id", "scene_id") if c in frame.columns]
    records = []
    for rec in frame[["path", *keep]].to_dict("records"):
        row = _patch_row(root / rec["path"])
        row["path"] = str(rec["path"])
        records.append({**{k: rec[k] for k in keep}, **row})
    table = pd.DataFrame(records, columns=[*keep, *PATCH_COLUMNS])
    for col in ("bands", "height", "width", "nodata_pixels", "nan_count", "epsg"):
        table[col] = table[col].astype("Int64")
    for col in ("min", "max", "nodata", "pixel_size_x", "pixel_size_y"):
        table[col] = table[col].astype("float64")
    return table


def index_table(index: pd.DataFrame) -> pd.DataFrame:
    """The index plus ``splits_per_location`` (must be 1: splits are location-disjoint)."""
    table = pd.DataFrame(index.drop(columns=[c for c in ("geometry",) if c in index.columns]))
    if {"location_id", "split"} <= set(table.columns):
        table["splits_per_location"] = (
            table.groupby("location_id", dropna=False)["split"].transform("nunique").astype("Int64")
        )
    return table


def location_table(index: pd.DataFrame) -> pd.DataFrame:
    """One row per location: scenes that saw it and whether it is multitemporal (0/1)."""
    if len(index) == 0:
        return pd.DataFrame(
            {
                "location_id": pd.Series(dtype="int64"),
                "n_scenes": pd.Series(dtype="int64"),
                "multitemporal": pd.Series(dtype="int64"),
            }
        )
    n = index.groupby("location_id")["scene_id"].nunique()
    return pd.DataFrame(
        {
            "location_id": n.index.astype("int64"),
            "n_scenes": n.to_numpy().astype("int64"),
            "multitemporal": (n.to_numpy() > 1).astype("int64"),
        }
    )


def dataset_band_means(index: pd.DataFrame) -> np.ndarray:
    """Per-band mean over all patches (every patch has P x P pixels) from ``band_means``."""
    return np.stack([np.asarray(b, np.float64) for b in index["band_means"]]).mean(axis=0)


def band_drift_table(band_means: np.ndarray, reference: Reference) -> pd.DataFrame:
    """One row per band: dataset mean, reference mean/std and drift in reference stds."""
    band_means = np.asarray(band_means, np.float64)
    if band_means.shape != reference.mean.shape:
        raise ValueError(
            f"{band_means.shape[0]} band means vs {reference.mean.shape[0]} reference bands"
        )
    return pd.DataFrame(
        {
            "band": np.arange(1, band_means.shape[0] + 1),
            "mean": band_means,
            "reference_mean": reference.mean,
            "reference_std": reference.std,
            "drift_sigma": (band_means - reference.mean) / reference.std,
        }
    )


# --- blocking gates -----------------------------------------------------------------------


def validate_patches(
    table: pd.DataFrame,
    settings: CurateSettings,
    report_path: Path | None = None,
    *,
    gx_dir: Path | None = None,
    run_name: str | None = None,
) -> ValidationReport:
    """The ``patches`` suite (+ patch size and nodata limit from params) on a ``patch_table``."""
    suite = _with(load_suite_dict("patches"), patch_expectations(settings))
    report = validate_frame(table, suite, gx_dir=gx_dir, run_name=run_name, index_column="path")
    if report_path is not None:
        report.write(report_path)
    return report


def validate_patch_index(
    index: pd.DataFrame,
    settings: CurateSettings,
    report_path: Path | None = None,
    *,
    gx_dir: Path | None = None,
    run_name: str | None = None,
) -> ValidationReport:
    """The ``patch_index`` suite (+ params thresholds) on the index (``index_table``)."""
    suite = _with(load_suite_dict("patch_index"), threshold_expectations(settings))
    report = validate_frame(
        index_table(index),
        suite,
        gx_dir=gx_dir,
        run_name=run_name or "patch_index",
        index_column="patch_id",
    )
    if report_path is not None:
        report.write(report_path)
    return report


def _gx_dir(settings: Settings, docs: bool | None) -> Path | None:
    if docs is None:
        docs = QualitySettings.from_settings(settings).data_docs
    return settings.layout.validation if docs else None


def validate_scene(
    settings: Settings,
    scene: str,
    patches_root: Path | None = None,
    *,
    docs: bool | None = None,
) -> ValidationReport:
    """Blocking gate on one scene's patch files (the ``curated_patches`` partition).

    Reads the scene's index fragment ``<patches>/scenes/<scene>.parquet`` for its patch
    paths; report ``<validation>/patches/<scene>.json``. A scene whose patches were all
    filtered out has an empty table, which passes.
    """
    from spectralearth.patches.store import fragment_paths, read_fragment

    root = Path(patches_root or settings.layout.patches)
    fragment, _ = fragment_paths(root, scene)
    if not fragment.is_file():
        raise FileNotFoundError(f"no index fragment for scene {scene}: {fragment}")
    table = patch_table(root, read_fragment(root, scene))
    return validate_patches(
        table,
        settings.curate,
        settings.layout.validation / "patches" / f"{scene}.json",
        gx_dir=_gx_dir(settings, docs),
        run_name=scene,
    )


def validate_index(
    settings: Settings,
    patches_root: Path | None = None,
    report_path: Path | None = None,
    *,
    docs: bool | None = None,
) -> ValidationReport:
    """Blocking gate on the whole index; report ``<validation>/patch_index.json``."""
    from spectralearth.patches.store import read_index

    root = Path(patches_root or settings.layout.patches)
    return validate_patch_index(
        read_index(root),
        settings.curate,
        report_path or settings.layout.validation / "patch_index.json",
        gx_dir=_gx_dir(settings, docs),
    )


def validate_all_patches(
    settings: Settings,
    patches_root: Path | None = None,
    *,
    docs: bool | None = None,
) -> ValidationReport:
    """The ``patches`` suite on every patch of the index (the CLI's full scan)."""
    from spectralearth.patches.store import read_index

    root = Path(patches_root or settings.layout.patches)
    return validate_patches(
        patch_table(root, read_index(root)),
        settings.curate,
        settings.layout.validation / "patches.json",
        gx_dir=_gx_dir(settings, docs),
        run_name="all_patches",
    )


# --- warning gates ------------------------------------------------------------------------


def validate_band_drift(
    index: pd.DataFrame,
    reference: Reference | str | None,
    max_drift_sigma: float,
    *,
    gx_dir: Path | None = None,
) -> ValidationReport:
    """Warning: every band's dataset mean within ``max_drift_sigma`` reference stds.

    ``reference`` None or a string (the reason there is none): the gate is skipped.
    """
    if isinstance(reference, str):  # why there is no reference (resolve_reference failed)
        return _skipped("band_drift", reference)
    if reference is None:
        return _skipped("band_drift", "no reference statistics")
    if len(index) == 0 or "band_means" not in index.columns:
        return _skipped("band_drift", "no patches")
    try:
        table = band_drift_table(dataset_band_means(index), reference)
    except ValueError as exc:  # band count mismatch: the blocking gates name it
        return _skipped("band_drift", str(exc))
    suite = _with(
        load_suite_dict("band_drift"),
        [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {
                    "column": "drift_sigma",
                    "min_value": -max_drift_sigma,
                    "max_value": max_drift_sigma,
                },
            }
        ],
    )
    report = validate_frame(table, suite, gx_dir=gx_dir, index_column="band", blocking=False)
    worst = int(table["drift_sigma"].abs().idxmax())
    report.observed = {
        "reference": reference.source,
        "max_abs_drift_sigma": round(float(table["drift_sigma"].abs().max()), 4),
        "worst_band": int(table["band"][worst]),
        "bands_beyond_tolerance": int((table["drift_sigma"].abs() > max_drift_sigma).sum()),
        "tolerance_sigma": max_drift_sigma,
    }
    return report


def _skipped(suite: str, reason: str) -> ValidationReport:
    return ValidationReport(suite, True, [], blocking=False, observed={"skipped": reason})


def validate_multitemporal(
    index: pd.DataFrame, min_share: float, *, gx_dir: Path | None = None
) -> ValidationReport:
    """Warning: the share of multitemporal locations is at least ``min_share``."""
    table = location_table(index)
    suite = _with(
        load_suite_dict("multitemporal"),
        [
            {
                "type": "expect_column_mean_to_be_between",
                "kwargs": {"column": "multitemporal", "min_value": min_share, "max_value": 1.0},
            }
        ],
    )
    report = validate_frame(table, suite, gx_dir=gx_dir, blocking=False)
    report.observed = {
        "locations": len(table),
        "multitemporal_share": round(float(table["multitemporal"].mean()), 4)
        if len(table)
        else 0.0,
        "min_share": min_share,
    }
    return report


def validate_warnings(
    settings: Settings,
    index: pd.DataFrame | None = None,
    patches_root: Path | None = None,
    reference: Reference | str | os.PathLike | None = None,
    *,
    docs: bool | None = None,
) -> list[ValidationReport]:
    """Non-blocking gates on the index: band drift vs the reference, multitemporal share.

    Report ``<validation>/warnings.json``.
    """
    from spectralearth.patches.store import read_index

    q = QualitySettings.from_settings(settings)
    if index is None:
        index = read_index(Path(patches_root or settings.layout.patches))
    gx_dir = _gx_dir(settings, docs)
    try:
        ref: Reference | str | None = resolve_reference(settings, reference)
    except (OSError, ValueError) as exc:  # a configured reference that is absent or malformed
        ref = f"reference statistics unusable: {exc}"
    reports = [
        validate_band_drift(index, ref, q.max_band_drift_sigma, gx_dir=gx_dir),
        validate_multitemporal(index, q.min_multitemporal_share, gx_dir=gx_dir),
    ]
    with atomic_path(settings.layout.validation / "warnings.json") as tmp:
        tmp.write_text(json.dumps([r.as_dict() for r in reports], indent=1, default=str))
    return reports


def quality_gates(
    settings: Settings,
    patches_root: Path | None = None,
    report_path: Path | None = None,
    *,
    docs: bool | None = None,
) -> dict[str, ValidationReport]:
    """Every gate on the curated dataset (index, all patch files, warnings), for the CLI.

    ``report_path``: the index report (default ``<validation>/patch_index.json``); the others
    go beside it in ``<validation>``. Blocking gates failed:
    ``any(r.blocking and not r.success for r in result.values())``.
    """
    reports = {
        "patch_index": validate_index(settings, patches_root, report_path, docs=docs),
        "patches": validate_all_patches(settings, patches_root, docs=docs),
    }
    for r in validate_warnings(settings, patches_root=patches_root, docs=docs):
        reports[r.suite] = r
    return reports
