"""What the gates read from params.yaml: the ``curate`` and ``validate`` sections, no path.

:class:`GateSettings` carries no data folder on purpose: a gate writes only under the report
folder it is given and reads only the curated folder it is given. Its
:meth:`~GateSettings.parameters` are the values the suites' ``$PARAMETER`` expressions are
filled with at run time, named ``<section>_<key>`` after params.yaml (``curate_max_cloud_frac``,
``validate_max_band_drift_sigma``, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from spectralearth.config import CurateSettings, Settings, ValidateSettings

# sections of params.yaml whose numbers a suite may use as $PARAMETER <section>_<key>
PARAMETER_SECTIONS = ("curate", "validate")


@dataclass(frozen=True)
class GateSettings:
    """The params.yaml sections the gates use (``curate`` thresholds, ``validate``)."""

    curate: CurateSettings
    validate: ValidateSettings = field(default_factory=ValidateSettings)

    @classmethod
    def of(cls, settings: GateSettings | Settings | CurateSettings) -> GateSettings:
        """From the project's settings (or only the curation thresholds: ``validate``
        defaults)."""
        if isinstance(settings, GateSettings):
            return settings
        if isinstance(settings, CurateSettings):
            return cls(settings)
        if isinstance(settings, Settings):
            return cls(settings.curate, settings.validate)
        raise TypeError(f"want GateSettings, Settings or CurateSettings, got {type(settings)}")

    def parameters(self) -> dict[str, float | int]:
        """Every number of the ``curate`` and ``validate`` sections as ``<section>_<key>``."""
        out: dict[str, float | int] = {}
        for section in PARAMETER_SECTIONS:
            values = dataclasses.asdict(getattr(self, section))
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[f"{section}_{key}"] = value
        return out
