"""Fixtures of the reliability tests."""

from __future__ import annotations

import dagster as dg
import pytest

from tests.helpers import write_params


@pytest.fixture
def env(archive_copy, tmp_path, monkeypatch):
    from dagster_project.resources import SpectralearthSettings

    params = write_params(tmp_path / "cfg")
    monkeypatch.setenv("SPECTRALEARTH_DATA_DIR", str(archive_copy.parent))
    with dg.instance_for_test() as instance:
        yield instance, {"settings": SpectralearthSettings(params_file=str(params))}, params
