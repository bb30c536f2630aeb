"""Running one suite on one table: Great Expectations 1.x, parameters filled at run time.

Without a report folder the run is ephemeral (nothing written, fastest); with one the result
is recorded in that folder's GX project for its Data Docs (:mod:`.docs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from spectralearth.validation.docs import data_docs_index, record
from spectralearth.validation.report import MAX_NAMED_ROWS, ExpectationResult, ValidationReport
from spectralearth.validation.suites import (
    check_parameters,
    parameter_expressions,
    render_fix,
)


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


def _outcome(
    r, raw: Mapping, index_column: str | None, default_fix: str | None, fix_context: Mapping
) -> ExpectationResult:
    res = r.result or {}
    cfg = r.expectation_config
    column = cfg.kwargs.get("column") or ",".join(cfg.kwargs.get("column_list") or [])
    rows: tuple[str, ...] = ()
    if index_column and not r.success:
        listed = res.get("partial_unexpected_index_list") or res.get("unexpected_index_list")
        if listed:
            rows = tuple(
                str(d.get(index_column)) for d in listed[:MAX_NAMED_ROWS] if isinstance(d, dict)
            )
    parameters = {
        key: (expression, cfg.kwargs.get(key))
        for key, expression in parameter_expressions(raw).items()
    }
    fix = None
    if not r.success:
        fix = render_fix((raw.get("meta") or {}).get("fix") or default_fix, fix_context)
    count = res.get("unexpected_count")
    return ExpectationResult(
        expectation=cfg.type,
        column=column or None,
        success=bool(r.success),
        unexpected_count=None if count is None else int(count),
        observed_value=str(res.get("observed_value", "")),
        unexpected_rows=rows,
        exception=_exception_message(r.exception_info),
        parameters=parameters,
        fix=fix,
    )


def validate_frame(
    df: pd.DataFrame,
    suite: dict,
    parameters: Mapping[str, object] | None = None,
    *,
    report_dir: Path | None = None,
    run_name: str | None = None,
    index_column: str | None = None,
    blocking: bool = True,
    fix_context: Mapping[str, object] | None = None,
) -> ValidationReport:
    """Run ``suite`` (a GX JSON dict, see :mod:`.suites`) on ``df``.

    ``parameters`` fill the suite's ``$PARAMETER`` expressions (every name must be given).
    ``report_dir``: record the result in that folder's GX project under ``run_name``
    (default: the suite name); the Data Docs are rebuilt separately, once per run
    (:func:`.docs.build_data_docs`). Failed expectations name up to ``MAX_NAMED_ROWS``
    offending rows by ``index_column`` and carry their ``meta.fix`` with ``fix_context``
    (``curated``, ``report``, ``scene``) and the parameters filled in.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    parameters = dict(parameters or {})
    check_parameters(suite, parameters)
    table = pd.DataFrame(df.drop(columns=[c for c in ("geometry",) if c in df.columns]))
    result_format: dict = {"result_format": "SUMMARY"}
    if index_column and index_column in table.columns:
        result_format["unexpected_index_column_names"] = [index_column]
    else:
        index_column = None
    name = suite["name"]
    docs = None
    if report_dir is None:
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch_def = (
            ctx.data_sources.add_pandas("frames")
            .add_dataframe_asset(name)
            .add_batch_definition_whole_dataframe("all")
        )
        gx_suite = ctx.suites.add(gx.ExpectationSuite(**suite))
        batch = batch_def.get_batch(batch_parameters={"dataframe": table})
        res = batch.validate(
            gx_suite, result_format=result_format, expectation_parameters=parameters
        )
    else:
        gx_suite, res = record(
            Path(report_dir),
            suite,
            table,
            parameters,
            run_name=run_name or name,
            result_format=result_format,
        )
        docs = data_docs_index(Path(report_dir))
    raw_by_id = {
        e.id: raw for e, raw in zip(gx_suite.expectations, suite["expectations"], strict=True)
    }
    context = {"curated": "CURATED", "report": "REPORT", **parameters, **(fix_context or {})}
    default_fix = (suite.get("meta") or {}).get("fix")
    results = tuple(
        _outcome(r, raw_by_id.get(r.expectation_config.id, {}), index_column, default_fix, context)
        for r in res.results
    )
    return ValidationReport(
        name,
        bool(res.success),
        results,
        blocking=blocking,
        rows=len(table),
        docs=docs,
        source=(suite.get("meta") or {}).get("source"),
    )
