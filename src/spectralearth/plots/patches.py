"""Figures of the curated patches (``spectralearth summary``): RGB quicklooks of a sample and
the map of locations by number of dates. The numbers are in
:mod:`spectralearth.patches.summary`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spectralearth.plots.figure import panel_grid, polygons, save, use_agg


def rgb_quicklooks(
    patches_root: Path, index: pd.DataFrame, out_png: Path, n: int = 8, seed: int = 0
) -> Path:
    """True-colour quicklooks (bands nearest 641/556/468 nm) of a seeded sample of patches,
    each stretched to its own 2-98 % range, titled with the patch id and date."""
    use_agg()
    import numpy as np
    import rasterio

    from spectralearth.bands import RGB_NM, nearest_band

    sample = index.sample(min(n, len(index)), random_state=seed) if len(index) else index
    fig, axes = panel_grid(len(sample), "no patches")
    for ax, row in zip(axes.flat, sample.itertuples(), strict=False):
        with rasterio.open(Path(patches_root) / row.path) as src:
            wl = [float(x) for x in src.tags()["wavelengths"].split(",")]
            rgb = src.read([nearest_band(wl, nm) + 1 for nm in RGB_NM]).astype(float)
        lo, hi = np.percentile(rgb, [2, 98])
        ax.imshow(np.clip((rgb.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-6), 0, 1))
        ax.set_title(f"{row.patch_id}\n{pd.Timestamp(row.datetime):%Y-%m-%d}", fontsize=8)
    fig.suptitle("RGB quicklooks (641/556/468 nm)")
    return save(fig, out_png)


def locations_map(index: pd.DataFrame, out_png: Path) -> Path:
    """Patch footprints (WGS84) coloured by how many dates each location has."""
    use_agg()
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 6))
    if len(index) == 0 or "geometry" not in index:
        ax.text(0.5, 0.5, "no patches", ha="center", va="center")
        ax.axis("off")
        return save(fig, out_png)
    dates = index.groupby("location_id")["scene_id"].nunique()
    first = index.drop_duplicates("location_id")
    cmap = plt.get_cmap("viridis", max(int(dates.max()), 2))
    for row in first.itertuples():
        n = int(dates[row.location_id])
        for poly in polygons(row.geometry):
            xs, ys = poly.exterior.xy
            ax.fill(xs, ys, color=cmap(n - 1), alpha=0.8, lw=0.3, ec="k")
    # markers too, so locations stay visible when the extent spans countries
    cx = [g.centroid.x for g in first.geometry]
    lats = [g.centroid.y for g in first.geometry]
    colours = [cmap(int(dates[loc]) - 1) for loc in first["location_id"]]
    ax.scatter(cx, lats, c=colours, s=25, edgecolors="k", linewidths=0.4, zorder=3)
    ax.set_aspect(1 / max(np.cos(np.radians(np.mean(lats))), 0.1))
    ax.set_xlabel("longitude (deg)")
    ax.set_ylabel("latitude (deg)")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=cmap(k - 1)) for k in range(1, int(dates.max()) + 1)
    ]
    ax.legend(handles, [f"{k} date(s)" for k in range(1, int(dates.max()) + 1)], fontsize=8)
    ax.set_title(f"{len(first)} locations, {float((dates > 1).mean()):.0%} multitemporal")
    return save(fig, out_png)
