"""STAC export of the scene catalogue, the coverage map and the markdown table."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pystac
import pytest
import rasterio
from shapely.geometry import box

from spectralearth.catalog import CATALOG_COLUMNS, build_catalog, read_catalog
from spectralearth.plots import catalog_table_markdown, coverage_map, short_scene
from spectralearth.stac import write_stac

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def catalog(tiny_archive) -> gpd.GeoDataFrame:
    return build_catalog(tiny_archive).catalog


@pytest.fixture(scope="module")
def mixed_catalog(tiny_archive, tmp_path_factory) -> gpd.GeoDataFrame:
    """A product folder, a zipped product, an older processing of the first (superseded) and
    a junk folder (rejected)."""
    archive = tmp_path_factory.mktemp("mixed") / "archive"
    archive.mkdir()
    products = sorted(p for p in tiny_archive.iterdir() if p.name.startswith("ENMAP01"))[:2]
    shutil.copytree(products[0], archive / products[0].name)
    with zipfile.ZipFile(archive / f"{products[1].name}.zip", "w") as zf:
        for f in sorted(products[1].iterdir()):
            zf.write(f, f"{products[1].name}/{f.name}")
    first = products[0].name
    older = first[: -len("20241106T181745Z")] + "20230101T000000Z"
    assert older < first
    (archive / older).mkdir()
    for f in products[0].iterdir():
        shutil.copy(f, archive / older / f.name.replace(first, older))
    (archive / "not_a_product").mkdir()
    cat = build_catalog(archive).catalog
    assert sorted(cat["status"]) == ["ok", "ok", "rejected", "superseded"]
    return cat


def with_rejected(catalog: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    row = {c: None for c in CATALOG_COLUMNS}
    row.update(scene="broken_delivery", status="rejected", reason="METADATA.XML | is missing")
    records = [*catalog[CATALOG_COLUMNS].to_dict("records"), row]  # as build_catalog does
    df = pd.DataFrame(records, columns=CATALOG_COLUMNS)
    return gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326")


def read_items(collection_json: Path) -> tuple[pystac.Collection, dict[str, pystac.Item]]:
    col = pystac.Collection.from_file(str(collection_json))
    return col, {it.id: it for it in col.get_items(recursive=True)}


# ----------------------------------------------------------------------------- STAC


def test_stac_items_bands_projection_extent(catalog, tmp_path):
    cat = with_rejected(catalog)
    out = write_stac(cat, tmp_path / "stac")
    assert out == tmp_path / "stac" / "collection.json" and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stac"]  # no temp folders left

    col, items = read_items(out)
    assert col.id == "enmap-l2a"
    ok = cat[cat["status"] != "rejected"]
    assert sorted(items) == sorted(ok["scene"]) and len(items) == 6
    assert "broken_delivery" not in items

    raw = json.loads(out.read_text())
    assert not any(link["rel"] == "self" for link in raw["links"])  # self-contained
    assert all(not link["href"].startswith("/") for link in raw["links"] if link["rel"] == "item")
    assert raw["summaries"]["platform"] == ["enmap"]
    assert raw["summaries"]["instruments"] == ["hsi"]
    assert "eo:cloud_cover" in raw["summaries"]

    for _, row in ok.iterrows():
        item = items[row["scene"]]
        p = item.properties
        assert p["platform"] == "enmap" and p["instruments"] == ["hsi"]
        assert p["processing:level"] == "L2A"
        assert p["spectralearth:status"] == "ok"
        assert p["spectralearth:datatake"] == row["datatake"]
        assert p["spectralearth:tile"] == row["tile"]
        assert p["eo:cloud_cover"] == pytest.approx(100 * row["cloud_frac"], abs=0.01)
        assert p["eo:snow_cover"] == pytest.approx(100 * row["snow_frac"], abs=0.01)
        assert p["proj:code"] == row["crs"]
        assert p["proj:shape"] == [row["height"], row["width"]]
        assert p["proj:transform"] == pytest.approx(list(row["transform"]))
        assert item.datetime == row["start_time"].to_pydatetime()
        assert item.common_metadata.start_datetime == row["start_time"].to_pydatetime()
        assert item.common_metadata.end_datetime == row["stop_time"].to_pydatetime()
        assert box(*item.bbox).buffer(1e-9).contains(row["geometry"])

        image = item.assets["image"]
        assert Path(image.href).is_file() and image.href.endswith("-SPECTRAL_IMAGE.TIF")
        assert image.media_type == pystac.MediaType.GEOTIFF and "data" in image.roles
        eo_bands = image.extra_fields["eo:bands"]
        assert len(eo_bands) == 224
        assert eo_bands[0]["center_wavelength"] == pytest.approx(0.418, abs=0.002)
        assert eo_bands[-1]["center_wavelength"] == pytest.approx(2.445, abs=0.01)
        assert 0.004 < eo_bands[0]["full_width_half_max"] < 0.015
        centres = sorted(b["center_wavelength"] for b in eo_bands)
        assert centres == pytest.approx([w / 1000 for w in row["wavelengths"]], abs=1e-6)
        rb = image.extra_fields["raster:bands"]
        assert len(rb) == 224
        assert {(b["data_type"], b["nodata"]) for b in rb} == {("int16", -32768)}
        assert all(b["scale"] == pytest.approx(1e-4) and b["offset"] == 0 for b in rb)
        meta = item.assets["metadata"]
        assert Path(meta.href).is_file() and meta.media_type == pystac.MediaType.XML
        assert any("eo/" in e for e in item.stac_extensions)
        assert any("raster/" in e for e in item.stac_extensions)
        assert any("projection/" in e for e in item.stac_extensions)

    # the collection extent covers every item
    ext_bbox = col.extent.spatial.bboxes[0]
    start, end = col.extent.temporal.intervals[0]
    for item in items.values():
        assert box(*ext_bbox).buffer(1e-9).contains(box(*item.bbox))
        assert start <= item.datetime <= end
    assert start == ok["start_time"].min().to_pydatetime()
    assert end == ok["stop_time"].max().to_pydatetime()


def test_stac_rerun_replaces_folder(catalog, tmp_path):
    out_dir = tmp_path / "stac"
    write_stac(catalog, out_dir)
    dropped = catalog["scene"].iloc[0]
    assert (out_dir / dropped).is_dir()
    (out_dir / "stale.txt").write_text("left over by someone")

    write_stac(catalog.iloc[1:], out_dir)
    _, items = read_items(out_dir / "collection.json")
    assert len(items) == len(catalog) - 1 and dropped not in items
    assert not (out_dir / dropped).exists() and not (out_dir / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stac"]  # no .tmp / .old folders


def test_stac_failed_write_keeps_old_folder(catalog, tmp_path, monkeypatch):
    from spectralearth import stac

    out_dir = tmp_path / "stac"
    write_stac(catalog, out_dir)
    calls = []

    def failing_write(self, href, txt):
        calls.append(href)
        if len(calls) == 3:
            raise OSError("disk full")
        stac.atomic_write_text(href, txt)

    monkeypatch.setattr(stac._AtomicStacIO, "write_text_to_href", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_stac(catalog.iloc[1:], out_dir)
    _, items = read_items(out_dir / "collection.json")
    assert len(items) == len(catalog)  # the old, complete catalogue is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stac"]


def test_stac_superseded_kept_rejected_dropped(mixed_catalog, tmp_path):
    col, items = read_items(write_stac(mixed_catalog, tmp_path / "stac", collection_id="mixed"))
    assert col.id == "mixed"
    statuses = {i: it.properties["spectralearth:status"] for i, it in items.items()}
    expected = mixed_catalog[mixed_catalog["status"] != "rejected"].set_index("scene")["status"]
    assert statuses == expected.to_dict()
    assert sorted(col.summaries.to_dict()["spectralearth:status"]) == ["ok", "superseded"]
    sup = next(it for it in items.values() if it.properties["spectralearth:status"] == "superseded")
    assert "newer processing" in sup.properties["spectralearth:reason"]
    assert len(sup.assets["image"].extra_fields["eo:bands"]) == 224

    # the zipped product: assets are GDAL /vsizip/ paths that open in place
    zipped = mixed_catalog[mixed_catalog["path"].str.endswith(".zip")]["scene"].item()
    image = items[zipped].assets["image"]
    assert image.href.startswith("/vsizip/") and image.href.endswith("-SPECTRAL_IMAGE.TIF")
    assert items[zipped].assets["metadata"].href.startswith("/vsizip/")
    with rasterio.open(image.href) as src:
        assert src.count == len(image.extra_fields["eo:bands"]) == 224


def test_stac_from_geoparquet_and_missing_products(catalog, tmp_path):
    """A catalogue read back from GeoParquet (arrays, not lists) and one moved away from its
    archive (band table from the catalogue columns, conventional asset names)."""
    pq = tmp_path / "catalog.parquet"
    catalog.to_parquet(pq, index=False)
    cat = read_catalog(pq)
    _, items = read_items(write_stac(cat, tmp_path / "a"))
    assert len(items) == len(cat)

    moved = cat.copy()
    moved["path"] = [str(tmp_path / "elsewhere" / s) for s in moved["scene"]]
    _, items = read_items(write_stac(moved, tmp_path / "b"))
    item = items[moved["scene"].iloc[0]]
    bands = item.assets["image"].extra_fields["eo:bands"]
    assert len(bands) == 224 and bands[0]["center_wavelength"] == pytest.approx(0.418, abs=0.002)
    assert item.assets["image"].extra_fields["raster:bands"][0]["scale"] == pytest.approx(1e-4)
    assert "metadata" not in item.assets


def test_stac_duplicate_scene_kept_once(catalog, tmp_path):
    doubled = gpd.GeoDataFrame(
        pd.concat([catalog, catalog.iloc[:1]], ignore_index=True), geometry="geometry"
    )
    _, items = read_items(write_stac(doubled, tmp_path / "stac"))
    assert sorted(items) == sorted(catalog["scene"])


def test_stac_empty_catalogue(catalog, tmp_path):
    col, items = read_items(write_stac(with_rejected(catalog.iloc[0:0]), tmp_path / "stac"))
    assert items == {}
    assert col.extent.temporal.intervals == [[None, None]]


# ----------------------------------------------------------------------------- plots


def assert_png(path: Path, min_size: int = 200) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = plt.imread(path)
    assert img.ndim == 3 and img.shape[0] >= min_size and img.shape[1] >= min_size
    assert float(img[..., :3].std()) > 0.01  # something was drawn
    assert not list(path.parent.glob(".*.tmp"))


def test_coverage_map(catalog, mixed_catalog, tmp_path):
    out = coverage_map(with_rejected(catalog), tmp_path / "figs" / "coverage.png")
    assert out == tmp_path / "figs" / "coverage.png"
    assert_png(out)
    assert_png(coverage_map(mixed_catalog, tmp_path / "mixed.png", title="mixed"))


def test_coverage_map_empty(catalog, tmp_path):
    assert_png(coverage_map(catalog.iloc[0:0], tmp_path / "empty.png"))
    only_rejected = with_rejected(catalog.iloc[0:0])
    assert_png(coverage_map(only_rejected, tmp_path / "rejected.png"))


def test_catalog_table_markdown(mixed_catalog):
    cat = with_rejected(mixed_catalog)
    md = catalog_table_markdown(cat)
    lines = md.strip().splitlines()
    assert len(lines) == len(cat) + 2
    assert lines[0] == "| scene | date | status | cloud % | snow % | reason |"
    n_cols = lines[0].count("|")
    assert all(line.count("|") - line.count("\\|") == n_cols for line in lines)
    assert "METADATA.XML \\| is missing" in md
    ok = cat[cat["status"] == "ok"].iloc[0]
    row = next(line for line in lines if line.startswith(f"| {short_scene(ok['scene'])} "))
    assert ok["start_time"].strftime("%Y-%m-%d") in row
    assert f"{100 * ok['cloud_frac']:.1f}" in row
    assert catalog_table_markdown(cat.iloc[0:0]).strip().count("\n") == 1
