"""Plots people look at: mean spectra per class (water-vapour ranges shaded), class-map
quicklooks, loss curves that say how to read them; the package split by stage keeps every
name importable from ``spectralearth.plots``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
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


def _caption(path) -> str:
    with Image.open(path) as im:
        return im.text["Description"]


def test_moco_loss_curve_says_the_loss_rises_while_the_memory_bank_fills(tmp_path):
    """#20.4: a MoCo loss that rises is read as a failure unless the figure says why."""
    rising = list(np.linspace(2.0, 5.4, 30))  # what `make run` logs: 30 steps, K=256, B=8
    png = loss_curve(rising, tmp_path / "loss.png", "moco spec_resnet18", method="moco",
                     memory_bank_size=256, batch_size=8)  # fmt: skip
    w, h = _png_ok(png)
    assert w > 400 and h > 300
    caption = _caption(png)
    assert "rises while real keys fill it" in caption and "first 32 steps" in caption
    assert "ln(K+1) = 5.55" in caption  # the chance level, ln(257)
    assert "ends before the bank is full" in caption  # 30 steps < 32: all of it is filling
    long_run = loss_curve(rising * 4, tmp_path / "long.png", method="moco",
                          memory_bank_size=256, batch_size=8)  # fmt: skip
    assert "ends before" not in _caption(long_run)


@pytest.mark.parametrize(
    "method, words",
    [("dino", "teacher"), ("mae", "lower is better"), (None, "memory bank fills")],
)
def test_every_loss_curve_has_a_caption(tmp_path, method, words):
    png = loss_curve([3.0, 2.5, 2.0], tmp_path / "loss.png", method=method)
    assert words in _caption(png)
    assert _caption(loss_curve([], tmp_path / "empty.png", method=method))  # no step: still a PNG


def test_every_public_name_stays_importable_from_the_package():
    import spectralearth.plots as plots
    from spectralearth.catalog_table import catalog_table_markdown

    old_names = {
        "STATUS_STYLE", "MAX_LABELS", "short_datatake", "short_scene", "coverage_map",
        "catalog_table_markdown", "rgb_quicklooks", "locations_map",
        "confusion_matrix_plot", "per_class_bars", "loss_curve", "class_spectra",
        "class_map_png", "scene_quicklooks",
    }  # fmt: skip
    assert old_names <= set(plots.__all__) and all(hasattr(plots, n) for n in old_names)
    assert plots.catalog_table_markdown is catalog_table_markdown
    # dataset counts are computation, not a figure: they live with their stage only (so the
    # figures do not pull the curation package into every stage's dependencies)
    assert not hasattr(plots, "dataset_summary")


def test_dataset_summary_counts():
    from spectralearth.patches.summary import dataset_summary

    assert dataset_summary(pd.DataFrame())["patches"] == 0
    index = pd.DataFrame(
        {"location_id": [1, 1, 2], "scene_id": [10, 11, 10], "split": ["train", "train", "val"]}
    )
    summary = dataset_summary(index)
    assert summary["patches"] == 3 and summary["locations"] == 2 and summary["scenes"] == 2
    assert summary["multitemporal_share"] == 0.5 and summary["split_train"] == 2


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
