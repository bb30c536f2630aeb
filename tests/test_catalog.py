import subprocess
import sys

import numpy as np

from spectralearth.catalog import build_catalog, ok_scenes, read_catalog


def test_catalog_lists_every_product_with_footprint_time_cover_and_wavelengths(
    tiny_archive, tmp_path
):
    out = tmp_path / "catalog.parquet"
    res = build_catalog(tiny_archive, out)
    cat = read_catalog(out)
    assert len(cat) == 6 and res.n_ok == 6
    assert cat.crs.to_epsg() == 4326
    row = cat.iloc[0]
    assert len(row["wavelengths"]) == 224 and np.all(np.diff(row["wavelengths"]) > 0)
    assert row["geometry"].is_valid and row["geometry"].area > 0
    assert row["stop_time"] > row["start_time"]
    # cover: the XML's percent and the QL masks' fraction agree (the generator writes both)
    assert abs(row["cloud_cover_xml"] - row["cloud_frac"]) < 0.01 + 1e-9
    assert cat["crs"].nunique() >= 2, "the tiny archive spans two UTM zones"


def test_broken_products_are_rejected_with_reasons_and_the_rest_survive(archive_copy, tmp_path):
    products = sorted(p for p in archive_copy.iterdir() if p.is_dir())
    broken = products[1]
    next(broken.glob("*-SPECTRAL_IMAGE.TIF")).write_bytes(b"")  # zero-byte image
    (archive_copy / "not-a-product").mkdir()
    (products[2] / f"{products[2].name}-METADATA.XML").write_text("<level_X><unclosed>")
    res = build_catalog(archive_copy, tmp_path / "c.parquet")
    rejected = dict(zip(res.rejected["scene"], res.rejected["reason"], strict=True))
    assert set(rejected) == {broken.name, "not-a-product", products[2].name}
    assert "SPECTRAL_IMAGE cannot be opened" in rejected[broken.name]
    assert (
        "naming convention" in rejected["not-a-product"]
        or "not an EnMAP" in rejected["not-a-product"]
    )
    assert "not safe, well-formed XML" in rejected[products[2].name]
    assert len(ok_scenes(res.catalog)) == 4  # 6 products, 2 broken


def test_newer_processing_supersedes_older(archive_copy, tmp_path):
    import shutil

    first = sorted(p for p in archive_copy.iterdir() if p.is_dir())[0]
    newer_name = first.name[:-16] + "29991231T000000Z"
    newer = archive_copy / newer_name
    shutil.copytree(first, newer)
    for f in newer.iterdir():
        f.rename(newer / f.name.replace(first.name, newer_name))
    cat = build_catalog(archive_copy, None).catalog
    status = dict(zip(cat["scene"], cat["status"], strict=True))
    assert status[first.name] == "superseded" and status[newer_name] == "ok"


def test_cli_prints_rejections_and_exits_zero_when_written(archive_copy, tmp_path):
    (archive_copy / "junk").mkdir()
    out = tmp_path / "cat.parquet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spectralearth.cli",
            "catalog",
            str(archive_copy),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "REJECTED junk:" in proc.stdout and "catalog: 7 products" in proc.stdout
    assert out.exists()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spectralearth.cli",
            "catalog",
            str(tmp_path / "nowhere"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "archive folder not found" in proc.stderr
