"""Validate: every data-quality gate on a curated folder (the GX suites of expectations/),
reports and Data Docs under the report folder it is given."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectralearth.config import Settings
from spectralearth.profiling import StageUsage, Usage
from spectralearth.stages.result import StageResult, usage_metadata


@dataclass(frozen=True)
class Validation(StageResult):
    curated: Path
    reports: tuple[Any, ...]  # spectralearth.validation.ValidationReport
    usage: Usage | None = None

    @property
    def passed(self) -> bool:
        """Every blocking gate passed (warnings never fail a validation)."""
        return all(r.success for r in self.reports if r.blocking)

    @property
    def docs(self) -> Path | None:
        return next((r.docs for r in self.reports if r.docs), None)

    def metadata(self) -> dict:
        return {
            **{f"{r.suite}_passed": bool(r.success) for r in self.reports},
            "summary": " | ".join(r.summary() for r in self.reports),
            **({"data_docs": self.docs} if self.docs else {}),
            **usage_metadata(self.usage),
        }

    def summary(self) -> str:
        lines = [
            ("WARNING " if not (r.blocking or r.success) else "") + r.summary()
            for r in self.reports
        ]
        if self.docs:
            lines.append(f"data docs: {self.docs}")
        return "\n".join(lines)


def validate(settings: Settings, curated: Path, report: Path | None = None) -> Validation:
    """The blocking gates (index, every patch file) and the warnings on ``curated``."""
    from spectralearth.validation import quality_gates

    with StageUsage() as usage:
        reports = quality_gates(settings, curated, report)
    return Validation(Path(curated), tuple(reports.values()), usage.result)
