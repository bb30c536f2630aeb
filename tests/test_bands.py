import numpy as np
import pytest
import rasterio

from spectralearth import bands
from tests.helpers import shared


def test_nominal_table_is_enmap_224_sorted_with_detectors():
    t = bands.enmap_nominal()
    assert len(t) == 224
    assert np.all(np.diff(t.wavelengths) > 0)
    assert t.detectors.count("VNIR") == 91 and t.detectors.count("SWIR") == 133
    assert 417 < t.wavelengths[0] < 420 and 2444 < t.wavelengths[-1] < 2447


def test_view_drops_exactly_the_native_water_vapour_bands():
    w = bands.enmap_nominal().wavelengths
    dropped = np.flatnonzero(bands.in_water_vapour(w)) + 1  # 1-based native numbers
    assert dropped.tolist() == list(range(127, 142)) + list(range(161, 168))
    assert len(bands.view_wavelengths()) == 202


def test_select_view_is_by_wavelength_whatever_the_band_order():
    t = bands.enmap_nominal()
    rng = np.random.default_rng(0)
    perm = rng.permutation(224)
    shuffled = t.wavelengths[perm] + rng.uniform(-0.5, 0.5, 224)  # recalibration shifts
    # (real products differ by < 0.1 nm: 418.24 vs 418.20)
    idx = bands.select_view(shuffled)
    assert np.allclose(shuffled[idx], bands.view_wavelengths(), atol=0.51)


def test_select_view_rejects_a_product_missing_bands():
    w = bands.enmap_nominal().wavelengths[:150]
    with pytest.raises(bands.BandMatchError, match="no product band within"):
        bands.select_view(w)
    with pytest.raises(bands.BandMatchError, match="NaN"):
        bands.select_view(np.full(224, np.nan))


def test_srf_resampling_keeps_flat_spectra_flat_and_moves_edges_smoothly():
    src = np.arange(400, 2501, 1.0)
    t = bands.enmap_nominal()
    flat = bands.resample(np.full_like(src, 0.3), src, t.wavelengths, t.fwhms)
    assert np.allclose(flat, 0.3)
    step = bands.resample((src > 1000).astype(float), src, t.wavelengths, t.fwhms)
    assert step[t.wavelengths < 980].max() < 0.01 and step[t.wavelengths > 1020].min() > 0.99


def test_real_snap_band_table_maps_to_the_view():
    import pandas as pd

    table = pd.read_csv(
        shared("enmap_l2a_metadata", "enmap_L2A_DT0000001049_bands_from_snap_test.csv")
    )
    idx = bands.select_view(table["wavelength_nm"].to_numpy())
    assert len(idx) == 202


def test_real_potsdam_tile_is_detector_ordered_yet_maps_to_the_view():
    tile = shared("enmap_potsdam", "images", "enmap_potsdam_tile_128_0.tif")
    with rasterio.open(tile) as src:
        tags = [src.tags(i) for i in range(1, src.count + 1)]
    key = next(k for k in tags[0] if "wavelength" in k.lower() and "unit" not in k.lower())
    wl = np.array([float(t[key]) for t in tags])
    assert not np.all(np.diff(wl) > 0), "tiles are documented as detector ordered"
    idx = bands.select_view(wl)
    assert np.all(np.diff(wl[idx]) > 0)
