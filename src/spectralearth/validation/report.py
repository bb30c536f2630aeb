"""What a gate returns: one :class:`ValidationReport` per suite run, and :class:`QualityGates`
for a run of several.

A failing report says, in :meth:`ValidationReport.summary`, which expectations failed and
with which thresholds (params.yaml names and values), the offending rows (ids, at most
``SHOWN_ROWS`` of them; the JSON report keeps up to ``MAX_NAMED_ROWS``) and what to run to
fix it (the expectation's ``meta.fix`` in the suite file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from spectralearth.io import atomic_path

MAX_NAMED_ROWS = 20  # offending rows a result keeps (GX partial_unexpected_index_list)
SHOWN_ROWS = 5  # ... and a summary line shows


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation of a suite run."""

    expectation: str  # GX type, e.g. expect_column_values_to_be_between
    column: str | None
    success: bool
    unexpected_count: int | None = None
    observed_value: str = ""
    unexpected_rows: tuple[str, ...] = ()  # ids of offending rows (bounded)
    exception: str | None = None
    # suite parameters: {kwarg: (expression in the suite file, value it had in this run)}
    parameters: Mapping[str, tuple[str, object]] = field(default_factory=dict)
    fix: str | None = None  # what to run when it fails (meta.fix, placeholders filled)

    @property
    def name(self) -> str:
        return f"{self.expectation}({self.column or ''})"

    def describe(self) -> str:
        """One line: the expectation, its params.yaml thresholds, what broke it."""
        line = self.name
        if self.parameters:
            line += (
                " ["
                + ", ".join(f"{k} {expr} = {value}" for k, (expr, value) in self.parameters.items())
                + "]"
            )
        if self.exception:
            return f"{line}: error: {self.exception}"
        if self.unexpected_rows:
            shown = ", ".join(self.unexpected_rows[:SHOWN_ROWS])
            count = self.unexpected_count or len(self.unexpected_rows)
            more = count - min(SHOWN_ROWS, len(self.unexpected_rows))
            return f"{line}: {count} unexpected: {shown}" + (f" and {more} more" if more else "")
        if self.unexpected_count:
            return f"{line}: {self.unexpected_count} unexpected"
        return f"{line}: observed {self.observed_value or 'nothing'}"

    def as_dict(self) -> dict:
        out = {
            "expectation": self.expectation,
            "column": self.column,
            "success": self.success,
            "unexpected_count": self.unexpected_count,
            "observed_value": self.observed_value,
        }
        if self.unexpected_rows:
            out["unexpected_rows"] = list(self.unexpected_rows)
        if self.exception:
            out["exception"] = self.exception
        if self.parameters:
            out["parameters"] = {
                k: {"expression": expr, "value": value}
                for k, (expr, value) in self.parameters.items()
            }
        if self.fix:
            out["fix"] = self.fix
        return out


@dataclass(frozen=True)
class ValidationReport:
    """One suite run on one table."""

    suite: str
    success: bool
    results: tuple[ExpectationResult, ...]
    blocking: bool = True
    rows: int | None = None  # rows of the table validated
    docs: Path | None = None  # the Data Docs index page the run is recorded in
    observed: Mapping[str, object] = field(default_factory=dict)
    source: str | None = None  # the suite file

    @property
    def skipped(self) -> str | None:
        reason = self.observed.get("skipped")
        return str(reason) if reason else None

    @property
    def failed(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    @property
    def failed_expectations(self) -> list[str]:
        return [r.name for r in self.failed]

    @property
    def fixes(self) -> list[str]:
        """The distinct fixes of the failed expectations, in suite order."""
        return list(dict.fromkeys(r.fix for r in self.failed if r.fix))

    def summary(self) -> str:
        if self.skipped:
            return f"{self.suite}: skipped: {self.skipped}"
        on = f" on {self.rows} rows" if self.rows is not None else ""
        if self.success:
            return f"{self.suite}: all {len(self.results)} expectations passed{on}"
        lines = [f"{self.suite}: {len(self.failed)} of {len(self.results)} expectations failed{on}"]
        lines += [f"  {r.describe()}" for r in self.failed]
        lines += [f"  fix: {fix}" for fix in self.fixes]
        return "\n".join(lines)

    def metadata(self) -> dict:
        """Plain values for a Dagster asset check (no None, JSON-able)."""
        meta: dict = {
            "summary": self.summary(),
            "evaluated": len(self.results),
            "failed": len(self.failed),
            "failed_expectations": self.failed_expectations,
        }
        rows = {r.name: list(r.unexpected_rows) for r in self.failed if r.unexpected_rows}
        if rows:
            meta["unexpected_rows"] = rows
        if self.fixes:
            meta["fix"] = "\n".join(self.fixes)
        if self.rows is not None:
            meta["rows"] = self.rows
        if self.docs is not None:
            meta["data_docs"] = str(self.docs)
        for key, value in self.observed.items():
            if isinstance(value, bool | int | float | str):
                meta[key] = value
        return meta

    def as_dict(self) -> dict:
        return {
            "suite": self.suite,
            "success": self.success,
            "blocking": self.blocking,
            "rows": self.rows,
            "docs": str(self.docs) if self.docs else None,
            "source": self.source,
            "observed": dict(self.observed),
            "summary": self.summary(),
            "results": [r.as_dict() for r in self.results],
        }

    def write(self, path: Path) -> Path:
        with atomic_path(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.as_dict(), indent=1, default=str))
        return Path(path)


@dataclass(frozen=True)
class QualityGates(Mapping):
    """The gates of one validation run, by suite (a read-only mapping suite -> report).

    ``passed``: every blocking suite passed (the exit status of ``spectralearth validate``).
    """

    patch_index: ValidationReport | None = None
    patches: ValidationReport | None = None
    band_drift: ValidationReport | None = None
    multitemporal: ValidationReport | None = None
    report_dir: Path | None = None
    docs: Path | None = None  # the Data Docs index page, when built

    @property
    def reports(self) -> Mapping[str, ValidationReport]:
        pairs = (
            ("patch_index", self.patch_index),
            ("patches", self.patches),
            ("band_drift", self.band_drift),
            ("multitemporal", self.multitemporal),
        )
        return MappingProxyType({k: r for k, r in pairs if r is not None})

    def __getitem__(self, suite: str) -> ValidationReport:
        return self.reports[suite]

    def __iter__(self) -> Iterator[str]:
        return iter(self.reports)

    def __len__(self) -> int:
        return len(self.reports)

    @property
    def passed(self) -> bool:
        return all(r.success for r in self.reports.values() if r.blocking)

    @property
    def blocking_failed(self) -> list[str]:
        return [s for s, r in self.reports.items() if r.blocking and not r.success]

    def summary(self) -> str:
        """What ``spectralearth validate`` prints: each suite, the docs, the verdict."""
        lines = [
            ("WARNING " if not (r.blocking or r.success) else "") + r.summary()
            for r in self.reports.values()
        ]
        if self.docs is not None:
            lines.append(f"data docs: {self.docs}")
        if self.report_dir is not None:
            lines.append(f"reports: {self.report_dir}")
        failed = self.blocking_failed
        lines.append(
            f"validate: blocking gates failed: {', '.join(failed)}"
            if failed
            else "validate: every blocking gate passed"
        )
        return "\n".join(lines)

    def metadata(self) -> dict:
        """Plain values for Dagster: the summary, counts, and each suite's metadata."""
        meta: dict = {
            "summary": self.summary(),
            "passed": self.passed,
            "evaluated": sum(len(r.results) for r in self.reports.values()),
            "failed": sum(len(r.failed) for r in self.reports.values()),
        }
        if self.docs is not None:
            meta["data_docs"] = str(self.docs)
        for suite, report in self.reports.items():
            meta[suite] = {k: v for k, v in report.metadata().items() if k != "data_docs"}
        return meta
