"""Validate: every data-quality gate on a curated folder (the GX suites of expectations/),
reports and Data Docs only under the report folder it is given."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spectralearth.config import Settings
from spectralearth.profiling import StageUsage, Usage
from spectralearth.stages.result import StageResult, usage_metadata


@dataclass(frozen=True)
class Validation(StageResult):
    curated: Path
    gates: object  # spectralearth.validation.QualityGates
    usage: Usage | None = None

    @property
    def passed(self) -> bool:
        """Every blocking gate passed (warnings never fail a validation)."""
        return bool(self.gates.passed)

    def metadata(self) -> dict:
        return {**self.gates.metadata(), **usage_metadata(self.usage)}

    def summary(self) -> str:
        return self.gates.summary()


def default_report_dir(settings: Settings, curated: Path) -> Path:
    """The pipeline's own validation folder for its own curated folder; for another folder,
    ``<curated>/validation`` (never the pipeline's)."""
    if Path(curated).resolve() == settings.layout.patches.resolve():
        return settings.layout.validation
    return Path(curated) / "validation"


def validate(settings: Settings, curated: Path, report_dir: Path) -> Validation:
    """The blocking gates (index, every patch file) and the warnings on ``curated``."""
    from spectralearth.validation import quality_gates

    with StageUsage() as usage:
        gates = quality_gates(curated, report_dir, settings)
    return Validation(Path(curated), gates, usage.result)
