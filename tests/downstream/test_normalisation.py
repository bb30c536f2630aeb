"""The paper recipe's normalisation: the published statistics of each sensor."""

from __future__ import annotations

import numpy as np
import pytest

from spectralearth.downstream.normalisation import (
    REFERENCE_STATS_ENV,
    ReferenceStatsError,
    reference_stats,
)
from tests.helpers import shared


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "sensor, bands, folder",
    [
        ("EnMAP", 202, ""),
        ("DESIS", 235, "statistics_other_sensors/desis"),
        ("Hyperion", 198, "statistics_other_sensors/eo1"),
        ("Intuition-1", 150, "statistics_other_sensors/hyperview"),
    ],
)
def test_each_sensor_gets_its_own_statistics(sensor, bands, folder):
    root = shared("spectralearth_reference")
    stats = reference_stats(sensor, bands, root)
    where = root / folder
    assert stats["source"] == str(where)
    np.testing.assert_allclose(stats["mean"], np.load(where / "mu.npy"), rtol=1e-7)
    np.testing.assert_allclose(stats["std"], np.load(where / "sigma.npy"), rtol=1e-7)


def test_the_reference_repository_s_data_layout_works_too(tmp_path, monkeypatch):
    for name, n in (("statistics", 202), ("desis_statistics", 235)):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "mu.npy", np.full(n, 1000.0, np.float32))
        np.save(tmp_path / name / "sigma.npy", np.full(n, 10.0, np.float32))
    monkeypatch.setenv(REFERENCE_STATS_ENV, str(tmp_path))
    assert reference_stats("EnMAP", 202)["mean"][0] == 1000.0
    assert reference_stats("DESIS", 235)["source"] == str(tmp_path / "desis_statistics")


def test_missing_or_unfit_statistics_are_refused_naming_them(tmp_path):
    with pytest.raises(ReferenceStatsError, match=r"Hyperion not found: no mu.npy \+ sigma.npy"):
        reference_stats("Hyperion", 198, tmp_path)
    (tmp_path / "statistics").mkdir()
    np.save(tmp_path / "statistics" / "mu.npy", np.zeros(200))
    np.save(tmp_path / "statistics" / "sigma.npy", np.ones(200))
    with pytest.raises(ReferenceStatsError, match=r"mu.npy: 200 bands of EnMAP.*has 202"):
        reference_stats("EnMAP", 202, tmp_path)
    with pytest.raises(ReferenceStatsError, match="no reference statistics for sensor 'HySpex'"):
        reference_stats("HySpex", 160, tmp_path)
