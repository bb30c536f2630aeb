"""Plots people look at: mean spectra per class (water-vapour ranges shaded), class-map
quicklooks, loss curves."""

from __future__ import annotations

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from spectralearth.bands import view_wavelengths
from spectralearth.plots import class_map_png, class_spectra, loss_curve


def _png_ok(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_class_spectra_shades_the_removed_ranges(tmp_path):
    wl = np.asarray(view_wavelengths())
    means = {"water": np.full(len(wl), 300.0), "forest": np.linspace(200, 4000, len(wl))}
    out = class_spectra(means, wl, tmp_path / "spectra.png")
    w, h = _png_ok(out)
    assert w > 400 and h > 200


def test_class_map_png_uses_the_colour_table(tmp_path):
    data = np.zeros((40, 60), dtype=np.uint8)
    data[:, 30:] = 1
    data[:5] = 255  # masked
    tif = tmp_path / "map.tif"
    profile = dict(driver="GTiff", width=60, height=40, count=1, dtype="uint8",
                   crs="EPSG:32633", transform=from_origin(0, 0, 30, 30), nodata=255)  # fmt: skip
    with rasterio.open(tif, "w", **profile) as dst:
        dst.write(data, 1)
        dst.write_colormap(1, {0: (255, 0, 0, 255), 1: (0, 0, 255, 255)})
    png = class_map_png(tif, tmp_path / "map.png")
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    colours = {tuple(c) for c in rgb.reshape(-1, 3)}
    assert (255, 0, 0) in colours and (0, 0, 255) in colours


def test_loss_curve(tmp_path):
    _png_ok(loss_curve(list(np.linspace(5, 1, 100)), tmp_path / "loss.png"))


def test_scene_quicklooks_of_the_catalogue(tiny_archive, tmp_path):
    from spectralearth.catalog import build_catalog
    from spectralearth.plots import scene_quicklooks

    catalog = build_catalog(tiny_archive, tmp_path / "catalog.parquet").catalog
    png = scene_quicklooks(catalog, tmp_path / "quicklooks.png", n=4)
    w, h = _png_ok(png)
    assert w >= 4 * 200 and h > 200  # four panels side by side
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert len({tuple(c) for c in rgb[::97]}) > 50  # images, not an empty figure
