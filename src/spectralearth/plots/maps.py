"""Figures of the scene maps (``spectralearth predict``): a quicklook of a class map."""

from __future__ import annotations

import math
from pathlib import Path

from spectralearth.plots.figure import save, use_agg


def class_map_png(map_tif: Path, out_png: Path, max_size: int = 600) -> Path:
    """A quicklook of a uint8 class map GeoTIFF in its own colour table (255 = masked)."""
    use_agg()
    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio

    with rasterio.open(map_tif) as src:
        step = max(1, math.ceil(max(src.width, src.height) / max_size))
        data = src.read(1, out_shape=(math.ceil(src.height / step), math.ceil(src.width / step)))
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = {}
    rgb = np.full((*data.shape, 3), 255, dtype=np.uint8)
    for value in np.unique(data):
        colour = cmap.get(int(value), (128, 128, 128, 255))[:3]
        rgb[data == value] = colour if value != 255 else (255, 255, 255)
    fig, ax = plt.subplots(figsize=(5, 5 * data.shape[0] / max(1, data.shape[1])), dpi=90)
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(Path(map_tif).stem[:60], fontsize=8)
    fig.tight_layout()
    return save(fig, Path(out_png))
