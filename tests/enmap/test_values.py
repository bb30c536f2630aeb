"""Stored values -> int16 reflectance x 10000: the rules both readers share."""

from __future__ import annotations

import numpy as np
import pytest

from spectralearth.enmap.scene import NODATA, ProductError
from spectralearth.enmap.values import decide_scaling, to_int16


def _sample(values, dtype) -> np.ndarray:
    return np.asarray(values, dtype=dtype).reshape(1, 1, -1)


def test_official_int16_passes_through_without_a_copy():
    raw = _sample([NODATA, 0, 1234, 32767], np.int16)
    out, nonfinite, out_of_range = to_int16(raw, np.ones(1), np.zeros(1), NODATA)
    assert out is raw and (nonfinite, out_of_range) == (0, 0)


def test_values_outside_int16_become_counted_nodata_never_wrapped_or_clipped():
    raw = _sample([70000, -70000, 32767, -32767, 5], np.int32)
    out, _, out_of_range = to_int16(raw, np.ones(1), np.zeros(1), None)
    assert out.ravel().tolist() == [NODATA, NODATA, 32767, -32767, 5]
    assert out_of_range == 2


def test_the_files_own_nodata_tag_for_any_dtype():
    out, nonfinite, _ = to_int16(_sample([0, 3, 255], np.uint8), np.full(1, 40.0), np.zeros(1), 0)
    assert out.ravel().tolist() == [NODATA, 120, 10200] and nonfinite == 0
    out, nonfinite, _ = to_int16(
        _sample([np.nan, np.inf, 0.5], np.float32), np.full(1, 1e4), np.zeros(1), float("nan")
    )
    assert out.ravel().tolist() == [NODATA, NODATA, 5000] and nonfinite == 1  # NaN is nodata


def _decide(sample, **kw):
    n = sample.shape[0]
    args = dict(gain=np.ones(n), offset=np.zeros(n), declared="test", detect_unit=False)
    return decide_scaling("p", sample, None, **{**args, **kw})


def test_float_unit_reflectance_is_detected_and_plausibility_checked():
    rng = np.random.default_rng(0)
    unit = rng.uniform(0.0, 0.6, size=(3, 20, 20)).astype(np.float32)
    scaling, report = _decide(unit, detect_unit=True, declared="")
    assert scaling.source == "reflectance 0..1" and np.all(scaling.gain == 1e4)
    assert not report.empty_bands.any() and 5000 < scaling.p99 < 6001
    radiance = unit * 50  # neither 0..1 nor x 10000
    with pytest.raises(ProductError, match="p: SPECTRAL_IMAGE values are not reflectance"):
        _decide(radiance, detect_unit=True, declared="float32 values")


@pytest.mark.parametrize(
    "dtype, gain, ok", [(np.uint8, 1.0, False), (np.uint8, 40.0, True), (np.int16, 1.0, True)]
)
def test_an_integer_type_must_hold_reflectance_one(dtype, gain, ok):
    sample = _sample(np.arange(100, 200), dtype)
    if ok:
        assert _decide(sample, gain=np.full(1, gain))[0].identity == (gain == 1.0)
    else:
        with pytest.raises(ProductError, match="is uint8 .* reflectance up to 0.0255 only"):
            _decide(sample, gain=np.full(1, gain))


def test_complex_values_and_bad_gains_are_refused():
    with pytest.raises(ProductError, match="not real numbers"):
        _decide(_sample([1, 2], np.complex64))
    with pytest.raises(ProductError, match="NaN or inf"):
        _decide(_sample([1000, 2000], np.int16), gain=np.full(1, np.nan))


def test_the_open_time_sample_reads_each_window_from_one_tile(tmp_path):
    """A window across a tile edge costs each band up to four tile decompressions: the
    sample's windows are moved (by less than a window) into one tile each."""
    import rasterio
    from rasterio.transform import from_origin

    from spectralearth.enmap.values import SAMPLE_GRID, SAMPLE_WINDOW, read_sample

    side, tile = 1200, 128
    rows, cols = np.indices((side, side))
    tile_id = (rows // tile * 100 + cols // tile).astype(np.int16)
    path = tmp_path / "tiled.tif"
    profile = dict(
        driver="GTiff",
        dtype="int16",
        count=1,
        width=side,
        height=side,
        tiled=True,
        blockxsize=tile,
        blockysize=tile,
        transform=from_origin(0, 0, 30, 30),
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(tile_id[None])
    with rasterio.open(path) as src:
        sample = read_sample(src)
    assert sample.shape == (1, SAMPLE_WINDOW, SAMPLE_GRID**2 * SAMPLE_WINDOW)
    windows = np.split(sample[0], SAMPLE_GRID**2, axis=1)
    assert all(np.unique(w).size == 1 for w in windows), "a window spans several tiles"
    # still spread over the image: first and last tile rows and columns of the windows
    ids = sorted(int(w[0, 0]) for w in windows)
    assert ids[0] == 0 and ids[-1] // 100 >= (side - SAMPLE_WINDOW) // tile - 1
