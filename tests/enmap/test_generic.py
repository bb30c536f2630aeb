"""Sensor-agnostic import: GeoTIFF / ENVI images with band wavelengths as scenes."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from spectralearth.bands import select_view
from spectralearth.enmap.generic import (
    GenericScene,
    is_generic_image,
    open_generic,
    parse_envi_header,
)
from spectralearth.enmap.scene import NODATA, ProductError
from tests.helpers import (
    POTSDAM_TILE,
    WL,
    cube,
    envi_lines,
    nm_tags,
    shared,
    write_envi,
    write_tif,
)

# ----------------------------------------------------------------------------- real data


def test_potsdam_tile_opens_in_detector_order_and_maps_to_the_view():
    tile = shared(*POTSDAM_TILE)
    scene = open_generic(tile)
    assert isinstance(scene, GenericScene)
    assert scene.name == scene.scene_key == tile.stem
    assert scene.image_path == tile and scene.ql_paths == {}
    with rasterio.open(tile) as src:
        tag_wl = np.array([float(src.tags(i)["wavelength"]) for i in range(1, src.count + 1)])
        source = src.read()
    wl = scene.meta.wavelengths
    assert len(wl) == 224
    np.testing.assert_allclose(wl, tag_wl)
    assert not np.all(np.diff(wl) > 0), "detector order is kept, not sorted"
    assert np.all(np.isfinite(scene.meta.fwhms))
    np.testing.assert_allclose(scene.meta.gains, 1e-4)
    idx = select_view(wl)
    assert len(idx) == 202 and np.all(np.diff(wl[idx]) > 0)

    raw = scene.read()
    assert raw.dtype == np.int16 and raw.shape == source.shape
    nod = source == NODATA
    assert np.array_equal(raw == NODATA, nod)
    assert np.array_equal(raw[~nod], np.round(source[~nod]).astype(np.int16))
    assert scene.counts == {"nonfinite": 0, "out_of_range": 0}

    # a curation-style read: a window of the 202 view bands, in view order
    win = Window(8, 4, 16, 16)
    part = scene.read(win, bands=idx)
    assert part.shape == (202, 16, 16)
    assert np.array_equal(part, raw[idx, 4:20, 8:24])
    assert scene.read_mask("QL_QUALITY_CLOUD", win).shape == (16, 16)
    assert not scene.read_mask("QL_PIXELMASK").any()

    empty = np.all(nod, axis=(1, 2))
    assert empty.any()
    assert np.all((wl[empty] > 1325) & (wl[empty] < 1395))
    assert np.all(scene.meta.bad_bands[empty])
    assert scene.meta.start_time is not None and scene.meta.start_time.year == 2022

    lon, lat = np.array(scene.meta.footprint_lonlat).T
    assert np.all(np.abs(lon - 13.0) < 0.3) and np.all(np.abs(lat - 52.4) < 0.2)
    assert is_generic_image(tile)


@pytest.mark.parametrize(
    "name",
    [
        "ENMAP01-____L2A-DT0000001053_20220611T072305Z_002_V010400_20231221T134421Z"
        "-SPECTRAL_IMAGE_COG.tiff",
        "hyspecnet_fake_patch-SPECTRAL_IMAGE.TIF",
    ],
)
def test_layout_examples_without_wavelengths_are_refused(name):
    path = shared("layout_examples", name)
    assert is_generic_image(path)
    with pytest.raises(ProductError, match="no wavelength information") as info:
        open_generic(path)
    assert info.value.product == name


# ----------------------------------------------------------------------------- ENVI


def test_envi_bsq_bil_bip_give_the_same_scene(tmp_path):
    data = cube()
    bbl = [1, 1, 0, 1, 1]
    scenes = []
    for il, ext in (("bsq", ".bsq"), ("bil", ".bil"), ("bip", ".bip")):
        path = write_envi(tmp_path / f"scene_{il}{ext}", data, il, envi_lines(bbl=bbl))
        assert is_generic_image(path)
        scenes.append(open_generic(path))
    for scene in scenes:
        np.testing.assert_allclose(scene.meta.wavelengths, WL)
        np.testing.assert_allclose(scene.meta.fwhms, 10.0)
        assert scene.meta.bad_bands.tolist() == [False, False, True, False, False]
        assert scene.meta.raw_fields["wavelength_source"] == "ENVI header"
        assert scene.meta.start_time.isoformat() == "2023-05-01T10:20:30.123456+00:00"
        assert scene.header_path is not None
        assert np.array_equal(scene.read(), data)
        assert np.array_equal(scene.read(Window(1, 2, 3, 4), bands=[4, 0]), data[[4, 0], 2:6, 1:4])
    # the header path opens the same scene
    assert np.array_equal(open_generic(tmp_path / "scene_bip.hdr").read(), data)


def test_envi_micrometres_and_extensionless_data_file(tmp_path):
    path = write_envi(tmp_path / "cube.bsq", cube(), "bsq", envi_lines(WL / 1000, "Micrometers"))
    bare = tmp_path / "cube"
    path.rename(bare)
    assert is_generic_image(bare) and not is_generic_image(tmp_path / "cube.hdr")
    scene = open_generic(bare)
    np.testing.assert_allclose(scene.meta.wavelengths, WL)
    np.testing.assert_allclose(scene.meta.fwhms, 10000.0)  # fwhm follows the header's unit


def test_envi_header_parser_handles_multiline_lists_and_comments():
    hdr = parse_envi_header(
        "ENVI\n; a comment\nsamples = 3\nWavelength  Units = um\n"
        "wavelength = { 0.4,\n 0.5 ,\n0.6 }\ndescription = {a = b}\n"
    )
    assert hdr["samples"] == "3"
    assert hdr["wavelength units"] == "um"
    assert hdr["wavelength"].replace("\n", "").replace(" ", "") == "0.4,0.5,0.6"
    assert hdr["description"] == "a = b"
    with pytest.raises(ValueError):
        parse_envi_header("samples = 3\n")


# ----------------------------------------------------------------------------- GeoTIFF


def test_micrometre_tags_without_units_are_converted(tmp_path):
    tags = [{"center_wavelength": f"{w / 1000:g}"} for w in WL]
    scene = open_generic(write_tif(tmp_path / "um.tif", cube(), band_tags=tags))
    np.testing.assert_allclose(scene.meta.wavelengths, WL)
    assert np.all(np.isnan(scene.meta.fwhms))
    assert scene.meta.start_time is None and scene.meta.stop_time is None


def test_wavelengths_from_band_descriptions(tmp_path):
    desc = [f"{w:g} nm" for w in WL]
    desc[1] = "Band 2 (550 Nanometers)"
    scene = open_generic(write_tif(tmp_path / "desc.TIF", cube(), descriptions=desc))
    np.testing.assert_allclose(scene.meta.wavelengths, WL)
    assert scene.meta.raw_fields["wavelength_source"] == "band descriptions"


def test_float_unit_reflectance_is_scaled_to_x10000(tmp_path):
    x = cube("float32").astype(np.float32)
    refl = np.where(x == NODATA, NODATA, x / 10000.0 + 0.00004).astype(np.float32)
    scene = open_generic(
        write_tif(
            tmp_path / "unit.tif",
            refl,
            band_tags=nm_tags(),
            tags={"TIFFTAG_DATETIME": "2021:06:30 11:12:13"},
        )  # fmt: skip
    )
    assert scene.meta.raw_fields["source_scaling"] == "reflectance 0..1"
    np.testing.assert_allclose(scene.meta.gains, 1.0)
    out = scene.read()
    valid = refl != NODATA
    assert np.array_equal(out == NODATA, ~valid)
    assert np.array_equal(out[valid], np.rint(refl[valid].astype(np.float64) * 10000))
    # the factor is decided per scene, so a dark window is scaled the same way
    dark = scene.read(Window(1, 1, 2, 2))
    assert np.array_equal(dark, out[:, 1:3, 1:3])
    assert scene.meta.start_time.isoformat() == "2021-06-30T11:12:13+00:00"


def test_float_x10000_is_rounded_and_nan_inf_become_counted_nodata(tmp_path):
    x = cube("float32").astype(np.float32) + np.float32(0.4)
    x[:, 0, 0] = NODATA
    x[0, 1, 1], x[2, 3, 3], x[4, 5, 6] = np.nan, np.inf, -np.inf
    scene = open_generic(write_tif(tmp_path / "nan.tif", x, band_tags=nm_tags()))
    assert scene.meta.raw_fields["source_scaling"] == "reflectance x 10000"
    out = scene.read()
    assert out.dtype == np.int16
    bad = (x == NODATA) | ~np.isfinite(x)
    assert np.array_equal(out == NODATA, bad)
    assert np.array_equal(out[~bad], np.rint(x[~bad]).astype(np.int16))
    assert scene.counts["nonfinite"] == 3


# ----------------------------------------------------------------------------- errors


def _raises(path, match):
    with pytest.raises(ProductError, match=match) as info:
        open_generic(path)
    assert info.value.product == path.name
    assert path.name in str(info.value)


def test_errors_name_the_file(tmp_path):
    _raises(write_tif(tmp_path / "plain.tif", cube()), "no wavelength information")

    tags = nm_tags()
    tags[2] = {"wavelength": "nan"}
    _raises(write_tif(tmp_path / "nanwl.tif", cube(), band_tags=tags), "non-finite")

    short = write_envi(tmp_path / "short.bsq", cube(), "bsq", envi_lines(WL[:4]))
    _raises(short, "wavelength count != band count")

    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    _raises(empty, "empty")

    for name, writer in (
        ("cut.tif", lambda p: write_tif(p, cube(), band_tags=nm_tags())),
        ("cut.bsq", lambda p: write_envi(p, cube(), "bsq", envi_lines())),
    ):
        path = writer(tmp_path / name)
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
        _raises(path, "truncated")

    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        nocrs = write_tif(tmp_path / "nocrs.tif", cube(), band_tags=nm_tags(), crs=None)
        _raises(nocrs, "no CRS")

    lonely = tmp_path / "lonely.bsq"
    lonely.write_bytes(b"\0" * 16)
    _raises(lonely, r"\.hdr")
    assert not is_generic_image(lonely)
    _raises(tmp_path / "missing.tif", "not a file")


def test_gdal_scaled_int16_reads_unchanged_and_index_units_are_refused(tmp_path):
    data = cube()
    path = write_tif(tmp_path / "scaled.tif", data, band_tags=nm_tags())
    with rasterio.open(path, "r+") as dst:
        dst.scales = [1e-4] * len(WL)
    scene = open_generic(path)
    assert scene.meta.raw_fields["source_scaling"] == "GDAL scale/offset -> reflectance 0..1"
    np.testing.assert_allclose(scene.meta.gains, 1e-4)
    assert np.array_equal(scene.read(), data)
    refl = scene.read_reflectance()
    assert np.isnan(refl[:, 0, 0]).all()
    np.testing.assert_allclose(refl[:, 1, 1], data[:, 1, 1] * 1e-4, rtol=1e-6)
    with pytest.raises(ProductError, match="unknown quality layer"):
        scene.read_mask("CLOUDS")

    index = write_envi(tmp_path / "index.bsq", data, "bsq", envi_lines(np.arange(1, 6), "Index"))
    _raises(index, "Index")
