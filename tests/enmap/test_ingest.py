"""Ingestion: product formats (folder, zip, ENVI, letter case), every bad input named with
its product while the rest of the archive survives (the archive sensor: tests/dagster_project)."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from spectralearth.catalog import build_catalog
from spectralearth.config import load_settings
from spectralearth.enmap.archive import find_product_path
from spectralearth.enmap.l2a import open_product
from spectralearth.enmap.scene import ProductError
from spectralearth.patches.curate import curate_scene
from tests.helpers import write_params


def _products(archive: Path) -> list[Path]:
    return sorted(p for p in archive.iterdir() if p.is_dir())


def _file(product: Path, suffix: str) -> Path:
    return next(product.glob(f"*-{suffix}"))


def _rejected(archive: Path) -> dict[str, str]:
    res = build_catalog(archive, None)
    return dict(zip(res.rejected["scene"], res.rejected["reason"], strict=True))


def _zip_product(product: Path, dest: Path, top_folder: bool = True) -> Path:
    out = dest / f"{product.name}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(product.iterdir()):
            zf.write(f, f"{product.name}/{f.name}" if top_folder else f.name)
    return out


# --- formats ------------------------------------------------------------------------------


def test_zip_product_reads_the_same_pixels_as_the_folder(archive_copy, tmp_path):
    product = _products(archive_copy)[0]
    zipped = _zip_product(product, tmp_path)
    a, b = open_product(product), open_product(zipped)
    assert b.name == a.name and b.image_path.startswith("/vsizip/")
    assert np.array_equal(a.read(), b.read())
    assert np.array_equal(a.read_mask("QL_QUALITY_CLOUD"), b.read_mask("QL_QUALITY_CLOUD"))
    # a zip in the archive is catalogued and curated like a folder
    shutil.rmtree(product)
    shutil.move(zipped, archive_copy / zipped.name)
    cat = build_catalog(archive_copy, None).catalog
    assert (cat["status"] == "ok").all() and product.name in set(cat["scene"])
    settings = load_settings(write_params(tmp_path / "p"))
    res = curate_scene(archive_copy / zipped.name, tmp_path / "patches", settings.curate)
    assert res.scene == product.name and res.windows > 0


@pytest.mark.parametrize("interleave", ["BSQ", "BIL", "BIP"])
def test_envi_image_in_any_interleave_reads_like_the_geotiff(archive_copy, interleave):
    product = _products(archive_copy)[0]
    tif = _file(product, "SPECTRAL_IMAGE.TIF")
    with rasterio.open(tif) as src:
        data, profile = src.read(), src.profile
    envi = product / f"{product.name}-SPECTRAL_IMAGE.{interleave}"
    profile.update(
        driver="ENVI", interleave={"BSQ": "band", "BIL": "line", "BIP": "pixel"}[interleave]
    )
    for key in ("tiled", "blockxsize", "blockysize", "compress", "predictor"):
        profile.pop(key, None)
    with rasterio.open(envi, "w", **profile) as dst:
        dst.write(data)
    tif.unlink()
    p = open_product(product)
    assert p.image_path.endswith(interleave)
    assert np.array_equal(p.read(), data)


def test_lower_case_suffixes_are_accepted(archive_copy):
    product = _products(archive_copy)[0]
    for f in product.iterdir():
        stem, ext = f.name.rsplit(".", 1)
        f.rename(product / f"{stem.replace('SPECTRAL_IMAGE', 'spectral_image')}.{ext.lower()}")
    p = open_product(product)
    assert p.image_path.endswith("-spectral_image.tif") and len(p.ql_paths) == 6


def test_wavelength_sorted_view_of_a_detector_ordered_product(archive_copy):
    product = _products(archive_copy)[0]
    p = open_product(product)
    order = np.random.default_rng(0).permutation(len(p.meta.wavelengths))
    p.meta.wavelengths = p.meta.wavelengths[order]  # as if stored in another band order
    assert np.all(np.diff(p.meta.wavelengths[p.wavelength_order]) > 0)


# --- bad inputs: each names the product, the others are untouched ---------------------------


def _break_xml(product: Path, old: str, new: str, count: int = 1) -> None:
    xml = _file(product, "METADATA.XML")
    text = xml.read_text()
    assert old in text, old
    xml.write_text(text.replace(old, new, count))


def _no_crs(product: Path) -> None:
    tif = _file(product, "SPECTRAL_IMAGE.TIF")
    with rasterio.open(tif) as src:
        data, profile = src.read(), src.profile
    profile.pop("crs")
    tif.unlink()
    with rasterio.open(tif, "w", **profile) as dst:
        dst.write(data)


def _far_footprint(product: Path) -> None:
    """The same polygon moved 10 degrees south: valid, but nowhere near the raster."""
    xml = _file(product, "METADATA.XML")
    moved = re.sub(
        r'(<latitude unit="DEG">)([-0-9.]+)(</latitude>)',
        lambda m: f"{m.group(1)}{float(m.group(2)) - 10:.7f}{m.group(3)}",
        xml.read_text(),
    )
    xml.write_text(moved)


BAD_INPUTS = {
    "missing XML": (lambda p: _file(p, "METADATA.XML").unlink(), "METADATA.XML is missing"),
    "XML not well formed": (
        lambda p: _file(p, "METADATA.XML").write_text("<level_X><base>"),
        "not safe, well-formed XML",
    ),
    "external entity": (
        lambda p: _file(p, "METADATA.XML").write_text(
            '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><level_X>&e;</level_X>'
        ),
        "not safe, well-formed XML",
    ),
    "entity bomb": (
        lambda p: _file(p, "METADATA.XML").write_text(
            '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><level_X>&b;</level_X>'
        ),
        "not safe, well-formed XML",
    ),
    "band count": (
        lambda p: _drop_last_band(p),
        "image has 224 bands but METADATA.XML describes 223",
    ),
    "wavelength missing": (
        lambda p: _drop_wavelength(p),
        "METADATA.XML bandCharacterisation/bandID 1 wavelengthCenterOfBand: is missing",
    ),
    "wavelength NaN": (lambda p: _nan_wavelength(p), "NaN or inf"),
    "zero-byte TIFF": (
        lambda p: _file(p, "SPECTRAL_IMAGE.TIF").write_bytes(b""),
        "SPECTRAL_IMAGE cannot be opened",
    ),
    # GDAL writes the TIFF directory last, so most truncations fail at open; one that keeps
    # the directory fails on the first read of a missing block
    "truncated TIFF": (
        lambda p: _truncate(_file(p, "SPECTRAL_IMAGE.TIF")),
        "cannot be opened|truncated or corrupt",
    ),
    "TIFF with missing blocks": (
        lambda p: _zero_tail_blocks(_file(p, "SPECTRAL_IMAGE.TIF")),
        "truncated or corrupt",
    ),
    "no CRS": (_no_crs, "has no CRS"),
    "footprint elsewhere": (_far_footprint, "footprint does not intersect"),
}


def _drop_last_band(product: Path) -> None:
    xml = _file(product, "METADATA.XML")
    text = xml.read_text()
    for _ in range(2):  # band 224 of bandCharacterisation and of bandStatistics
        start = text.index('<bandID number="224">')
        end = text.index("</bandID>", start) + len("</bandID>")
        text = text[:start] + text[end:]
    xml.write_text(text)


def _drop_wavelength(product: Path) -> None:
    """Rename the first band's wavelength element: the band has no wavelength any more."""
    _break_xml(product, "<wavelengthCenterOfBand>", "<wavelengthCentreTypo>")
    _break_xml(product, "</wavelengthCenterOfBand>", "</wavelengthCentreTypo>")


def _nan_wavelength(product: Path) -> None:
    xml = _file(product, "METADATA.XML")
    text = xml.read_text()
    i = text.index("<wavelengthCenterOfBand>") + len("<wavelengthCenterOfBand>")
    j = text.index("<", i)
    xml.write_text(text[:i] + "NaN" + text[j:])


def _zero_tail_blocks(path: Path) -> None:
    """A COG keeps its directory at the start: cut the file and only the data blocks go."""
    from rasterio.shutil import copy as rio_copy

    cog = path.with_suffix(".cog.tmp")
    rio_copy(path, cog, driver="COG", compress="NONE")
    data = cog.read_bytes()
    cog.unlink()
    path.write_bytes(data[: int(len(data) * 0.6)])


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_product_is_rejected_by_name_and_the_rest_survive(archive_copy, case):
    products = _products(archive_copy)
    victim = products[2]
    damage, reason = BAD_INPUTS[case]
    damage(victim)
    rejected = _rejected(archive_copy)
    assert set(rejected) == {victim.name}, rejected
    assert re.search(reason, rejected[victim.name]), rejected[victim.name]


def test_links_and_odd_names_never_reach_outside_the_archive(archive_copy, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(_products(archive_copy)[0], outside / _products(archive_copy)[0].name)
    link_name = _products(archive_copy)[0].name[:-2] + "9Z"  # a valid product name
    (archive_copy / link_name).symlink_to(outside / _products(archive_copy)[0].name)
    (archive_copy / "ENMAP01-..-evil").mkdir()
    rejected = _rejected(archive_copy)
    assert "leaves the archive" in rejected[link_name]
    assert "not an EnMAP L2A product" in rejected["ENMAP01-..-evil"]
    for name in (
        "../../etc",
        "/etc/passwd",
        "ENMAP01-____L2A-DT0000000001_20240101T000000Z_001_V010400_20240101T000000Z/../../x",
    ):
        with pytest.raises(ProductError):
            find_product_path(archive_copy, name)


def test_zip_members_escaping_the_folder_are_refused_and_nothing_is_written(archive_copy, tmp_path):
    product = _products(archive_copy)[0]
    evil = archive_copy / f"{product.name[:-2]}8Z.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escaped.txt", "x")
        zf.writestr("/abs/escaped.txt", "x")
    with pytest.raises(ProductError, match="escapes the product folder"):
        open_product(evil)
    rejected = _rejected(archive_copy)
    assert "escapes the product folder" in rejected[evil.name[:-4]]
    assert not list(tmp_path.rglob("escaped.txt")) and not Path("/abs").exists()


def test_fully_cloudy_product_is_catalogued_but_yields_no_patches(archive_copy, tmp_path):
    product = _products(archive_copy)[1]
    ql = _file(product, "QL_QUALITY_CLOUD.TIF")
    with rasterio.open(ql) as src:
        profile, shape = src.profile, (src.count, src.height, src.width)
    with rasterio.open(ql, "w", **profile) as dst:
        dst.write(np.ones(shape, dtype=profile["dtype"]))
    cat = build_catalog(archive_copy, None).catalog.set_index("scene")
    assert cat.loc[product.name, "status"] == "ok" and cat.loc[product.name, "cloud_frac"] == 1.0
    settings = load_settings(write_params(tmp_path))
    res = curate_scene(product, tmp_path / "patches", settings.curate)
    assert res.kept == 0 and res.rejected.get("cloud", 0) > 0


# --- generic images in the archive -------------------------------------------------------


def test_real_potsdam_tiles_are_catalogued_as_generic_scenes(tmp_path):
    from tests.helpers import shared

    images = shared("enmap_potsdam", "images")
    cat = build_catalog(images, None).catalog
    assert len(cat) == 18 and (cat["status"] == "ok").all(), cat["reason"].tolist()
    row = cat.iloc[0]
    assert row["source"] == "generic" and row["n_bands"] == 224
    assert len(row["bad_bands"]) == 6  # the empty ~1331-1391 nm bands
    lon, lat = row["geometry"].centroid.coords[0]
    assert 12.5 < lon < 13.5 and 52.0 < lat < 52.8
    assert row["start_time"].year == 2022


def _as_float_geotiff(product: Path, dest: Path, with_time: bool = True) -> Path:
    """The product's image as a float32 0..1 reflectance GeoTIFF, wavelengths in band tags,
    bands in reverse order (what a user's own export could look like)."""
    p = open_product(product)
    with rasterio.open(p.image_path) as src:
        data, profile = src.read(), src.profile
    refl = np.where(data == -32768, np.nan, data * 1e-4).astype(np.float32)[::-1]
    profile.update(dtype="float32", nodata=float("nan"), compress="deflate")
    out = dest / "user_export.tif"
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(refl)
        for i, wl in enumerate(p.meta.wavelengths[::-1], start=1):
            dst.update_tags(i, wavelength=f"{wl:.3f}")
        if with_time:
            dst.update_tags(start_time=p.meta.start_time.isoformat())
    return out


def test_generic_image_curates_to_the_same_patches_as_the_product(archive_copy, tmp_path):
    product = _products(archive_copy)[3]
    settings = load_settings(write_params(tmp_path / "cfg"))
    ref = curate_scene(product, tmp_path / "ref", settings.curate)
    export = _as_float_geotiff(product, tmp_path)
    res = curate_scene(export, tmp_path / "gen", settings.curate)
    assert res.scene == "user_export" and res.kept == ref.kept > 0
    for a, b in zip(ref.rows["path"], res.rows["path"], strict=True):
        with rasterio.open(tmp_path / "ref" / a) as fa, rasterio.open(tmp_path / "gen" / b) as fb:
            # 0..1 float -> x10000 int16 round trip: equal up to one unit of rounding
            assert np.abs(fa.read().astype(int) - fb.read().astype(int)).max() <= 1


def test_generic_image_without_time_is_rejected_with_the_reason(archive_copy, tmp_path):
    export = _as_float_geotiff(_products(archive_copy)[0], archive_copy, with_time=False)
    rejected = _rejected(archive_copy)
    assert set(rejected) == {"user_export"} and "no acquisition time" in rejected["user_export"]
    assert export.exists()


def test_bad_bands_from_band_statistics_and_empty_bands(archive_copy):
    product = _products(archive_copy)[0]
    tif = _file(product, "SPECTRAL_IMAGE.TIF")
    with rasterio.open(tif, "r+") as dst:  # band 130 left empty by the processor
        dst.write(np.full((dst.height, dst.width), -32768, dtype=np.int16), 130)
    xml = _file(product, "METADATA.XML")
    text = xml.read_text()
    i = text.index("<bandStatistics>")
    j = text.index('<bandID number="5">', i)
    k = text.index("<mean>", j) + len("<mean>")
    xml.write_text(text[:k] + "-1000000" + text[text.index("</mean>", k) :])
    cat = build_catalog(archive_copy, None).catalog.set_index("scene")
    assert list(cat.loc[product.name, "bad_bands"]) == [5, 130]
