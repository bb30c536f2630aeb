"""Integrity of a product at open time (issue 14: image dtypes, QL masks applied by pixel
index, strict XML, the catalogue saying ok for products curation then rejects, folder + zip
twins, predict with a mask of another size).

Each case damages one product of the tiny archive and checks the three users of the one
open-time validation agree: the catalogue row (ok with what it decided, or rejected with a
reason naming the field), curation (``curate_scene`` refuses with a ProductError naming the
product and the field and leaves nothing on disk, or writes the correct patches) and, for
masks, prediction.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from spectralearth.catalog import build_catalog, ok_scenes
from spectralearth.config import CurateSettings
from spectralearth.enmap.archive import find_scenes, newest_processings, scene_name
from spectralearth.enmap.scene import NODATA, QL_LAYERS, ProductError
from spectralearth.patches.curate import curate_scene

SETTINGS = CurateSettings(
    patch_size=32,
    max_nodata_frac=0.0,
    max_cloud_frac=0.05,
    max_snow_frac=0.1,
    max_haze_frac=1.0,
    max_cloudshadow_frac=1.0,
    max_cirrus_frac=1.0,
    val_frac=0.2,
    test_frac=0.2,
)


# ----------------------------------------------------------------------------- fixtures


def _patches(root: Path, result) -> dict[tuple[int, int], np.ndarray]:
    out = {}
    for row in result.rows.itertuples():
        with rasterio.open(root / row.path) as src:
            out[(row.row_off, row.col_off)] = src.read()
    return out


@pytest.fixture(scope="module")
def reference(tiny_archive, tmp_path_factory):
    """The first product of the tiny archive that keeps >= 3 windows, curated as delivered:
    (product folder, its catalogue row, curation result, patches by window)."""
    root = tmp_path_factory.mktemp("reference")
    catalog = build_catalog(tiny_archive).catalog.set_index("scene")
    for product in sorted(p for p in tiny_archive.iterdir() if p.is_dir()):
        result = curate_scene(product, root / product.name, SETTINGS)
        if result.kept >= 3:
            patches = _patches(root / product.name, result)
            return product, catalog.loc[product.name], result, patches
    pytest.skip("no product of the tiny archive keeps 3 windows")


@pytest.fixture
def product(reference, tmp_path) -> Path:
    """A private copy of the reference product, alone in an archive folder."""
    src = reference[0]
    dst = tmp_path / "archive" / src.name
    shutil.copytree(src, dst)
    return dst


def _file(product: Path, suffix: str) -> Path:
    return next(product.glob(f"*-{suffix}"))


def _image(product: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(_file(product, "SPECTRAL_IMAGE.TIF")) as src:
        return src.read(), dict(src.profile)


def _rewrite(path: Path, data: np.ndarray, profile: dict, **changes) -> None:
    profile = {**profile, **changes, "count": data.shape[0], "dtype": data.dtype.name}
    profile.update(height=data.shape[1], width=data.shape[2], compress="deflate", predictor=1)
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _rewrite_image(product: Path, data: np.ndarray, **changes) -> None:
    _, profile = _image(product)
    _rewrite(_file(product, "SPECTRAL_IMAGE.TIF"), data, profile, **changes)


def _rewrite_layer(product: Path, layer: str, data=None, **changes) -> None:
    path = _file(product, f"{layer}.TIF")
    with rasterio.open(path) as src:
        profile, current = dict(src.profile), src.read()
    _rewrite(path, current if data is None else data, profile, **changes)


def _edit_xml(product: Path, pattern: str, repl: str) -> None:
    xml = _file(product, "METADATA.XML")
    text, n = re.subn(pattern, repl, xml.read_text(), count=1)
    assert n == 1, pattern
    xml.write_text(text)


def _row(archive: Path, name: str, **kw):
    cat = build_catalog(archive, archive.parent / "catalog.parquet", **kw).catalog
    assert (archive.parent / "catalog.parquet").is_file()
    return cat.set_index("scene").loc[name]


def assert_refused(product: Path, *fields: str, **kw) -> None:
    """Catalogue row rejected and curation refused, both naming every field; nothing
    curated is left on disk and the product is untouched."""
    row = _row(product.parent, scene_name(product), **kw)
    assert row["status"] == "rejected", row["notes"]
    for f in fields:
        assert f in row["reason"], (f, row["reason"])
    out = product.parent.parent / "patches"
    with pytest.raises(ProductError) as err:
        curate_scene(product, out, SETTINGS)
    assert err.value.product == product.name and str(err.value).startswith(product.name)
    for f in fields:
        assert f in str(err.value), (f, str(err.value))
    assert err.value.reason == row["reason"], "catalogue and curation give the same reason"
    assert not out.exists(), sorted(out.rglob("*"))
    assert product.is_dir()


def assert_curated(product: Path, settings=SETTINGS, **kw):
    """Catalogue row ok; curation succeeds; returns (row, result, patches by window)."""
    row = _row(product.parent, scene_name(product), **kw)
    assert row["status"] == "ok", row["reason"]
    out = product.parent.parent / "patches"
    result = curate_scene(product, out, settings)
    assert result.kept > 0
    return row, result, _patches(out, result)


def assert_same_patches(got: dict, want: dict, tolerance: int = 0) -> None:
    assert got.keys() == want.keys()
    for key in want:
        diff = np.abs(got[key].astype(np.int32) - want[key].astype(np.int32)).max()
        assert diff <= tolerance, (key, diff)
        assert not (got[key] == NODATA).any()


# ----------------------------------------------------------------------------- dtypes


def test_float32_unit_reflectance_becomes_int16_x10000(product, reference):
    data, _ = _image(product)
    refl = np.where(data == NODATA, np.nan, data * 1e-4).astype(np.float32)
    _rewrite_image(product, refl, nodata=float("nan"))
    row, result, patches = assert_curated(product)
    assert "float32" in row["value_scaling"] and "0..1" in row["value_scaling"]
    assert "float32" in row["notes"]
    assert row["nodata_frac"] == pytest.approx(reference[1]["nodata_frac"])
    assert_same_patches(patches, reference[3], tolerance=1)  # float32 rounding, never zeros


def _uint8(data: np.ndarray) -> np.ndarray:
    """reflectance x 10000 -> uint8 steps of 40 (0.004 reflectance), 0 = nodata."""
    return np.where(data == NODATA, 0, np.clip(np.rint(data / 40.0), 1, 255)).astype(np.uint8)


def test_uint8_with_gain_0_0001_cannot_be_reflectance_x10000(product):
    data, _ = _image(product)
    _rewrite_image(product, _uint8(data), nodata=0)
    assert_refused(product, "SPECTRAL_IMAGE is uint8", "GainOfBand 0.0001")


def test_uint8_with_its_gain_and_nodata_0_reads_correctly(product, reference):
    data, _ = _image(product)
    stored = _uint8(data)
    _rewrite_image(product, stored, nodata=0)
    xml = _file(product, "METADATA.XML")
    xml.write_text(xml.read_text().replace("<GainOfBand>0.0001<", "<GainOfBand>0.004<"))
    row, result, patches = assert_curated(product)
    # the file's nodata tag (0), not -32768: the borders stay nodata
    assert row["nodata_frac"] == pytest.approx(reference[1]["nodata_frac"])
    assert sorted(patches) == sorted(reference[3])
    view_bands = _view_bands(product)
    for (r, c), patch in patches.items():
        want = stored[view_bands, r : r + 32, c : c + 32].astype(np.int16) * 40
        assert np.array_equal(patch, want)


def _view_bands(product: Path) -> np.ndarray:
    from spectralearth.enmap.view import open_view

    return open_view(product).bands


def test_generic_uint8_image_needs_a_reflectance_scale_factor(product, reference, tmp_path):
    data, profile = _image(product)
    from spectralearth.enmap.l2a import open_product

    wavelengths = open_product(reference[0]).meta.wavelengths
    archive = tmp_path / "generic"
    archive.mkdir()
    image = archive / "user_uint8.tif"

    def write(tags: dict) -> None:
        profile.update(dtype="uint8", nodata=0, compress="deflate", predictor=1)
        with rasterio.open(image, "w", **profile) as dst:
            dst.write(_uint8(data))
            for i, wl in enumerate(wavelengths, start=1):
                dst.update_tags(i, wavelength=f"{wl:.3f}")
            dst.update_tags(start_time="2023-06-01T10:00:00", **tags)

    write({})
    row = _row(archive, "user_uint8")
    assert row["status"] == "rejected" and "uint8" in row["reason"]
    assert "reflectance scale factor" in row["reason"]
    with pytest.raises(ProductError, match="user_uint8.*reflectance scale factor"):
        curate_scene(image, tmp_path / "p1", SETTINGS)
    assert not (tmp_path / "p1").exists()

    write({"reflectance_scale_factor": "250"})
    row, result, patches = assert_curated(image)
    assert row["value_scaling"] == "reflectance scale factor 250"
    assert sorted(patches) == sorted(reference[3])
    view_bands = _view_bands(image)
    for (r, c), patch in patches.items():
        want = _uint8(data)[view_bands, r : r + 32, c : c + 32].astype(np.int16) * 40
        assert np.array_equal(patch, want)


def _inside(reference, k: int) -> tuple[int, int]:
    """A pixel (row, col) in the middle of the reference's k-th kept window."""
    r, c = sorted(reference[3])[k]
    return r + 16, c + 16


def test_nan_and_inf_are_counted_nodata_and_their_windows_rejected(product, reference):
    data, _ = _image(product)
    x = np.where(data == NODATA, NODATA, data).astype(np.float32)
    (r0, c0), (r1, c1) = _inside(reference, 0), _inside(reference, 1)
    x[5, r0, c0], x[100, r1, c1] = np.nan, np.inf
    _rewrite_image(product, x, nodata=float(NODATA))
    row, result, patches = assert_curated(product)
    assert "2 NaN/inf values in the sample read as nodata" in row["notes"]
    want = dict(reference[3])
    for r, c in ((r0, c0), (r1, c1)):
        del want[(r - 16, c - 16)]
    assert_same_patches(patches, want)
    assert result.rejected["nodata"] == reference[2].rejected.get("nodata", 0) + 2


@pytest.mark.parametrize("value", [70000, -70000])
def test_values_outside_int16_are_nodata_never_wrapped(product, reference, value):
    data, _ = _image(product)
    x = data.astype(np.int32)
    r, c = _inside(reference, 0)
    x[:, r, c] = value  # would wrap to 4464 / -4464 in an int16 cast
    _rewrite_image(product, x, nodata=NODATA)
    row, result, patches = assert_curated(product)
    assert "outside the int16 range in the sample read as nodata" in row["notes"]
    want = {k: v for k, v in reference[3].items() if k != (r - 16, c - 16)}
    assert_same_patches(patches, want)


@pytest.mark.parametrize(
    "factor, dtype",
    [(0.01, np.int16), (10.0, np.int32), (1e-6, np.float32)],
    ids=["percent", "x100000", "tiny-floats"],
)
def test_values_that_are_not_reflectance_x10000_are_refused(product, factor, dtype):
    data, _ = _image(product)
    x = np.where(
        data == NODATA, NODATA, np.rint(data * factor) if dtype != np.float32 else data * factor
    )
    _rewrite_image(product, x.astype(dtype), nodata=NODATA)
    assert_refused(product, "SPECTRAL_IMAGE values are not reflectance x 10000", "99th percentile")


# ----------------------------------------------------------------------------- QL masks


def _half_grid(product: Path) -> None:
    """A 64 x 64 cloud mask of the same area (60 m pixels) for the 128 px image."""
    with rasterio.open(_file(product, "QL_QUALITY_CLOUD.TIF")) as src:
        mask, t = src.read(), src.transform
    _rewrite_layer(product, "QL_QUALITY_CLOUD", mask[:, ::2, ::2], transform=t * Affine.scale(2))


def _fifteen_m(product: Path) -> None:
    """The mask on a 15 m grid, same size: it covers the image's top-left quarter only."""
    with rasterio.open(_file(product, "QL_QUALITY_CLOUD.TIF")) as src:
        t = src.transform
    _rewrite_layer(product, "QL_QUALITY_CLOUD", transform=t * Affine.scale(0.5))


def _other_crs(product: Path) -> None:
    with rasterio.open(_file(product, "QL_QUALITY_CLOUD.TIF")) as src:
        epsg = src.crs.to_epsg()
    _rewrite_layer(
        product, "QL_QUALITY_CLOUD", crs=CRS.from_epsg(32631 if epsg != 32631 else 32632)
    )


MASK_DAMAGE = {
    "64x64 mask": (_half_grid, "another size"),
    "15 m mask": (_fifteen_m, "another transform"),
    "mask in another CRS": (_other_crs, "another CRS"),
}


@pytest.mark.parametrize("case", list(MASK_DAMAGE))
def test_masks_off_the_image_grid_are_refused(product, case):
    damage, why = MASK_DAMAGE[case]
    damage(product)
    assert_refused(product, "QL_QUALITY_CLOUD is not on the SPECTRAL_IMAGE grid", why)


def test_predict_with_a_mask_of_another_size_names_the_product(product, tmp_path):
    from spectralearth.predict import predict_scene

    _half_grid(product)
    with pytest.raises(ProductError, match=f"{product.name}: QL_QUALITY_CLOUD is not on"):
        predict_scene(_constant_model(tmp_path / "model"), product, tmp_path / "map.tif")
    assert not (tmp_path / "map.tif").exists()


def _constant_model(folder: Path) -> Path:
    import torch
    from torch import nn

    from spectralearth.models import create_model
    from spectralearth.models.heads import SegmentationModel, save_model

    encoder = create_model("spec_resnet18", in_chans=202)
    model = SegmentationModel(
        encoder, nn.Conv2d(encoder.num_features, 2, 1), torch.zeros(512), torch.ones(512)
    )
    info = {"backbone": "spec_resnet18", "classes": ["a", "b"], "patch_size": 32}
    stats = {"mean": [1000.0] * 202, "std": [500.0] * 202}
    return save_model(model, folder, {**info, "band_stats": stats})


@pytest.mark.parametrize("layers", [("QL_QUALITY_CLOUD",), QL_LAYERS], ids=["cloud", "all"])
def test_missing_masks_are_refused_unless_ignored_explicitly(product, reference, layers, caplog):
    for layer in layers:
        _file(product, f"{layer}.TIF").unlink()
    assert_refused(product, "quality layers missing: " + ", ".join(layers), "missing_masks")

    ignoring = dataclasses.replace(SETTINGS, missing_masks="ignore")
    with caplog.at_level(logging.WARNING, logger="spectralearth.enmap.view"):
        row, result, patches = assert_curated(product, ignoring, missing_masks="ignore")
    assert math.isnan(row["cloud_frac"]) and "QL_QUALITY_CLOUD" in row["notes"]
    assert result.missing_masks == layers
    assert result.as_metadata()["missing_masks"] == list(layers)
    assert any("quality layers missing" in r.message for r in caplog.records)
    assert set(reference[3]) <= set(patches)  # the cloud filter is off, nothing else changes


# ----------------------------------------------------------------------------- grids


def _regrid(product: Path, transform: Affine) -> None:
    """Image and every mask on ``transform`` (so the layers still agree with each other)."""
    _rewrite_image(product, _image(product)[0], transform=transform)
    for layer in QL_LAYERS:
        _rewrite_layer(product, layer, transform=transform)


def _origin(product: Path) -> Affine:
    return _image(product)[1]["transform"]


GRIDS = {
    "rotated": (lambda t: t * Affine.rotation(5), "the image grid is rotated"),
    "non-square": (lambda t: t * Affine.scale(1, 2 / 3), "30 x 20 m: square pixels"),
    "60 m": (lambda t: t * Affine.scale(2), "60 m: 30 m pixels"),
}


@pytest.mark.parametrize("case", list(GRIDS))
def test_grids_that_are_not_north_up_square_30_m_are_refused(product, case):
    change, why = GRIDS[case]
    _regrid(product, change(_origin(product)))
    assert_refused(product, why)


# ----------------------------------------------------------------------------- XML


def test_duplicate_wavelengths_are_refused(product):
    xml = _file(product, "METADATA.XML")
    text = xml.read_text()
    wl = re.findall(r"<wavelengthCenterOfBand>([^<]+)<", text)
    i = text.index('<bandID number="101">')
    j = text.index("<wavelengthCenterOfBand>", i)
    k = text.index("<", j + 5)
    xml.write_text(text[: j + len("<wavelengthCenterOfBand>")] + wl[99] + text[k:])
    assert_refused(product, "duplicate band wavelengths", "bands 100 and 101")


XML_VALUES = {
    "cloudCover": (r"<cloudCover>[^<]*<", "<cloudCover>abc<", "specific/qualityFlag/cloudCover"),
    "cloudCover range": (r"<cloudCover>[^<]*<", "<cloudCover>150<", "not a percentage"),
    "latitude": (
        r'<latitude unit="DEG">[^<]*<',
        '<latitude unit="DEG">north<',
        "boundingPolygon point 1 latitude",
    ),
    "gain": (r"<GainOfBand>[^<]*<", "<GainOfBand>one<", "bandID 1 GainOfBand"),
    "fwhm": (r"<FWHMOfBand>[^<]*<", "<FWHMOfBand>inf<", "bandID 1 FWHMOfBand"),
    "startTime": (r"<startTime>[^<]*<", "<startTime>yesterday<", "startTime"),
    "band mean": (r"<mean>[^<]*<", "<mean>n/a<", "bandStatistics/bandID 1 mean"),
    "channels": (
        r"<expectedChannelsList>([^<,]*),",
        r"<expectedChannelsList>\1,x,",
        "expectedChannelsList",
    ),
    "backgroundValue": (
        r"<backgroundValue>[^<]*<",
        "<backgroundValue>none<",
        "specific/backgroundValue",
    ),
    "band number": (r'<bandID number="1">', '<bandID number="first">', "bandID number"),
}


@pytest.mark.parametrize("case", list(XML_VALUES))
def test_xml_values_that_cannot_be_read_name_the_product_and_field(product, case):
    pattern, repl, field = XML_VALUES[case]
    _edit_xml(product, pattern, repl)
    assert_refused(product, "METADATA.XML", field)


# ----------------------------------------------------------------------------- archive


def _zip(product: Path) -> Path:
    out = product.parent / f"{product.name}.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(product.iterdir()):
            zf.write(f, f"{product.name}/{f.name}")
    return out


def test_folder_and_zip_of_one_product_are_one_ok_row_and_curated_once(product, tmp_path):
    zipped = _zip(product)
    cat = build_catalog(product.parent).catalog
    rows = cat[cat["scene"] == product.name].set_index("status")
    assert sorted(rows.index) == ["duplicate", "ok"]
    assert Path(rows.loc["ok", "path"]) == product.absolute()
    assert Path(rows.loc["duplicate", "path"]) == zipped.absolute()
    assert f"the same product as {product.name}" in rows.loc["duplicate", "reason"]
    assert ok_scenes(cat) == [product.name]
    assert newest_processings(find_scenes(product.parent)) == [product]
    # either order of discovery keeps the folder
    assert newest_processings([zipped, product]) == [product]


def test_any_exception_rejects_only_its_product(product, reference, monkeypatch, tmp_path):
    import spectralearth.enmap.l2a as l2a

    datatake = re.search(r"DT(\d{10})", product.name).group(1)  # another datatake
    other = product.parent / product.name.replace(datatake, f"{int(datatake) + 1:010d}")
    shutil.copytree(product, other)
    for f in other.iterdir():
        f.rename(other / f.name.replace(product.name, other.name))
    real = l2a.parse_metadata

    def flaky(xml, product="?"):
        if product == other.name:
            raise RuntimeError("disk hiccup")
        return real(xml, product=product)

    monkeypatch.setattr(l2a, "parse_metadata", flaky)
    cat = build_catalog(product.parent).catalog.set_index("scene")
    assert cat.loc[product.name, "status"] == "ok"
    assert cat.loc[other.name, "status"] == "rejected"
    assert "RuntimeError: disk hiccup" in cat.loc[other.name, "reason"]
    with pytest.raises(ProductError, match=f"{other.name}: .*RuntimeError: disk hiccup"):
        curate_scene(other, tmp_path / "patches", SETTINGS)
    assert not (tmp_path / "patches").exists()
