"""Resources: the project's settings (params.yaml + data folder), one per deployment."""

from __future__ import annotations

import dagster as dg

from spectralearth.config import Settings, load_settings


class SpectralearthSettings(dg.ConfigurableResource):
    """Which params.yaml to read and, optionally, where the data folder lives."""

    params_file: str | None = None
    data_dir: str | None = None
    pretrain_profile: str | None = None

    def load(self, **overrides: dict) -> Settings:
        """The settings; ``overrides`` maps a params section to keys to replace (e.g. a
        partition's ``pretrain={"method": ..., "backbone": ...}``). No side effect: the data
        folder is passed to the loader, never through the process environment."""
        return load_settings(
            self.params_file,
            overrides=overrides,
            profile=self.pretrain_profile,
            data_dir=self.data_dir,
        )
