"""The Great Expectations file project and Data Docs of a report folder.

Everything lives under the report folder a gate is given, never elsewhere::

    <report>/gx/                   GX file project (suites, stored validation results)
    <report>/data_docs/index.html  Data Docs site
    <report>/.gx.lock              one writer at a time (partition checks run in parallel)

History is bounded: the project keeps the latest result of each (suite, run name) — a run
name is a scene for the per-scene gate, ``patch_index`` / ``all_patches`` / the suite name for
the whole-dataset gates — and the index gate forgets the scenes the curated folder no longer
holds, so the site has one page per current scene and per whole-dataset suite however many
runs there were. Earlier results are in the JSON reports' history (DVC/git), not in the
site.

Recording a result (:func:`record`) does not touch the site; :func:`build_data_docs`
rebuilds it from the stored results once per run, into a staging folder swapped in last.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

DOCS_SITE = "spectralearth"
GX_FOLDER = "gx"
DOCS_FOLDER = "data_docs"
_STAGING = ".data_docs.next"
_OLD = ".data_docs.old"


def gx_project(report_dir: Path) -> Path:
    """The GX file project of a report folder."""
    return Path(report_dir) / GX_FOLDER


def data_docs_index(report_dir: Path) -> Path:
    """The Data Docs index page of a report folder."""
    return Path(report_dir) / DOCS_FOLDER / "index.html"


@contextlib.contextmanager
def locked(report_dir: Path) -> Iterator[None]:
    """One writer at a time on a report folder's GX project."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    with open(report_dir / ".gx.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def file_context(report_dir: Path):
    """The report folder's GX file project (created on first use), analytics and progress
    bars off, with one Data Docs site that builds into a staging folder."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="file", project_root_dir=str(report_dir))
    if ctx.config.analytics_enabled is not False:
        ctx.enable_analytics(False)
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        # relative to <report>/gx: the site moves with the report folder
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": f"../{_STAGING}/",
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    sites = dict(ctx.get_config().data_docs_sites or {})
    for name in sites:
        if name != DOCS_SITE:
            ctx.delete_data_docs_site(name)
    if sites.get(DOCS_SITE) != site:
        if DOCS_SITE in sites:
            ctx.delete_data_docs_site(DOCS_SITE)
        ctx.add_data_docs_site(DOCS_SITE, site)
    return ctx


def _get_or_add(get, add, name: str):
    try:
        return get(name)
    except (KeyError, LookupError):
        return add(name)


def record(
    report_dir: Path,
    suite: dict,
    table: pd.DataFrame,
    parameters: dict,
    *,
    run_name: str,
    result_format: dict,
):
    """Validate ``table`` against ``suite`` in the report folder's GX project and store the
    result, replacing the earlier one of the same (suite, run name).

    Returns (GX suite, ExpectationSuiteValidationResult).
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    name = suite["name"]
    with locked(report_dir):
        ctx = file_context(report_dir)
        source = _get_or_add(ctx.data_sources.get, ctx.data_sources.add_pandas, "frames")
        asset = _get_or_add(source.get_asset, source.add_dataframe_asset, name)
        batch_def = _get_or_add(
            asset.get_batch_definition, asset.add_batch_definition_whole_dataframe, "all"
        )
        gx_suite = ctx.suites.add_or_update(gx.ExpectationSuite(**suite))
        definition = ctx.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch_def, suite=gx_suite)
        )
        store = ctx.validation_results_store
        for key in store.list_keys():
            if key.expectation_suite_identifier.name == name and key.run_id.run_name == run_name:
                store.remove_key(key)
        result = definition.run(
            batch_parameters={"dataframe": table},
            expectation_parameters=parameters,
            result_format=result_format,
            run_id=RunIdentifier(run_name=run_name),
        )
    return gx_suite, result


def forget_results(report_dir: Path, suite: str, keep: set[str]) -> list[str]:
    """Drop the stored results of ``suite`` whose run name is not in ``keep`` (scenes no
    longer in the curated folder); returns the run names dropped."""
    if not gx_project(report_dir).is_dir():
        return []
    dropped = []
    with locked(report_dir):
        store = file_context(report_dir).validation_results_store
        for key in store.list_keys():
            run = key.run_id.run_name
            if key.expectation_suite_identifier.name == suite and run not in keep:
                store.remove_key(key)
                dropped.append(run)
    return sorted(dropped)


def stored_results(report_dir: Path) -> list[tuple[str, str]]:
    """(suite, run name) of every result the report folder's GX project holds."""
    if not gx_project(report_dir).is_dir():
        return []
    with locked(report_dir):
        keys = file_context(report_dir).validation_results_store.list_keys()
    return sorted((k.expectation_suite_identifier.name, k.run_id.run_name) for k in keys)


def build_data_docs(report_dir: Path) -> Path | None:
    """Rebuild the report folder's Data Docs from its stored results (staged, swapped in
    last). None when nothing was ever recorded there."""
    report_dir = Path(report_dir)
    if not gx_project(report_dir).is_dir():
        return None
    with locked(report_dir):
        staging, old, site = report_dir / _STAGING, report_dir / _OLD, report_dir / DOCS_FOLDER
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        file_context(report_dir).build_data_docs(site_names=[DOCS_SITE])
        if site.exists():
            site.rename(old)
        staging.rename(site)
        shutil.rmtree(old, ignore_errors=True)
    return data_docs_index(report_dir)
