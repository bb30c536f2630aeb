"""Figures of the scene catalogue: the coverage map and true-colour scene quicklooks.

No basemap ships with the project, so the map draws its own context: a lon/lat graticule,
the extent box of all footprints, and the centroids labelled with short datatake ids.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from spectralearth.catalog_table import short_datatake, short_scene
from spectralearth.plots.figure import panel_grid, polygons, save, use_agg

if TYPE_CHECKING:
    import geopandas as gpd

STATUS_STYLE = {
    "ok": {"facecolor": "#1f77b4", "edgecolor": "#0b3d66", "alpha": 0.35, "linestyle": "-"},
    # drawn on top of the current processing as a dashed outline (footprints often coincide)
    "superseded": {
        "facecolor": "none",
        "edgecolor": "#444444",
        "alpha": 0.9,
        "linestyle": "--",
    },
}
MAX_LABELS = 60  # centroid label groups drawn at most
_OTHER_STYLE = {"facecolor": "#ff7f0e", "edgecolor": "#a64f00", "alpha": 0.3, "linestyle": ":"}


def _graticule_step(span_deg: float) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 30.0):
        if span_deg / step <= 6:
            return step
    return 60.0


def coverage_map(
    catalog: gpd.GeoDataFrame,
    out_png: Path,
    title: str = "EnMAP L2A scene coverage",
) -> Path:
    """PNG map of the footprints (lon/lat), coloured by status; returns ``out_png``.

    Rejected rows have no footprint and are only counted in the subtitle. An empty
    catalogue (or one with no footprint) gives a PNG that says "no scenes".
    """
    use_agg()
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.patches import Polygon as MplPolygon
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    status = catalog["status"].astype(str) if len(catalog) else pd.Series(dtype=str)
    n_rejected = int((status == "rejected").sum())
    shown = catalog[(status != "rejected").to_numpy()] if len(catalog) else catalog
    if len(shown):
        shown = shown[[g is not None and not g.is_empty for g in shown.geometry]]

    fig, ax = plt.subplots(figsize=(8, 6.5), dpi=100)
    if not len(shown):
        ax.set_axis_off()
        ax.text(
            0.5,
            0.5,
            "no scenes",
            ha="center",
            va="center",
            fontsize=20,
            color="#555555",
            transform=ax.transAxes,
        )
        if n_rejected:
            ax.text(
                0.5,
                0.38,
                f"{n_rejected} rejected product(s)",
                ha="center",
                va="center",
                fontsize=11,
                color="#a00000",
                transform=ax.transAxes,
            )
        ax.set_title(title)
        return save(fig, out_png)

    minx, miny, maxx, maxy = (float(v) for v in shown.total_bounds)
    span = max(maxx - minx, maxy - miny, 1e-3)
    pad = max(0.15 * span, 0.05)
    x0, x1 = max(minx - pad, -180.0), min(maxx + pad, 180.0)
    y0, y1 = max(miny - pad, -90.0), min(maxy + pad, 90.0)

    # graticule: the major ticks, every `step` degrees
    step = _graticule_step(max(x1 - x0, y1 - y0))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MultipleLocator(step))
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}°"))
    ax.grid(True, color="#dddddd", lw=0.6, zorder=0)
    ax.set_axisbelow(True)

    # extent box of all footprints
    ax.add_patch(
        Rectangle(
            (minx, miny),
            maxx - minx,
            maxy - miny,
            fill=False,
            edgecolor="#999999",
            lw=1.0,
            linestyle=(0, (4, 3)),
            zorder=1,
        )
    )

    counts: dict[str, int] = {}
    # ok first; superseded (outlines) and other statuses on top
    order = shown.assign(_z=(shown["status"].astype(str) != "ok").astype(int)).sort_values("_z")
    for _, row in order.iterrows():
        st = str(row["status"])
        counts[st] = counts.get(st, 0) + 1
        style = STATUS_STYLE.get(st, _OTHER_STYLE)
        for poly in polygons(row.geometry):
            ax.add_patch(
                MplPolygon(list(poly.exterior.coords), closed=True, lw=1.2, zorder=2, **style)
            )

    # centroid labels; near-identical centroids (revisits) share one stacked label
    cell = span / 25.0
    groups: dict[tuple[int, int], list] = {}
    for _, row in shown.iterrows():
        c = row.geometry.centroid
        key = (round(c.x / cell), round(c.y / cell))
        groups.setdefault(key, []).append((c.x, c.y, short_datatake(row), str(row["status"])))
    for members in groups.values():
        cx = sum(m[0] for m in members) / len(members)
        cy = sum(m[1] for m in members) / len(members)
        labels = sorted({m[2] + ("*" if m[3] == "superseded" else "") for m in members})
        for x, y, _label, st in members:  # centroids stay visible where footprints are tiny
            style = STATUS_STYLE.get(st, _OTHER_STYLE)
            ax.plot(
                x,
                y,
                marker="s",
                ms=5,
                mfc=style["facecolor"],
                mec=style["edgecolor"],
                alpha=0.9,
                zorder=3,
            )
        if len(groups) > MAX_LABELS:  # a large archive: markers only, labels would be a blot
            continue
        ax.annotate(
            "\n".join(labels),
            (cx, cy),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=7,
            zorder=4,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.7},
        )

    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    mid_lat = max(min((y0 + y1) / 2.0, 89.0), -89.0)
    ax.set_aspect(1.0 / math.cos(math.radians(mid_lat)))
    ax.set_xlabel("Longitude (degrees east)")
    ax.set_ylabel("Latitude (degrees north)")

    handles = [
        Patch(**STATUS_STYLE.get(st, _OTHER_STYLE), label=f"{st} ({n})")
        for st, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0]))
    ]
    handles.append(Line2D([], [], color="#999999", lw=1.0, linestyle=(0, (4, 3)), label="extent"))
    if n_rejected:
        handles.append(Line2D([], [], color="none", label=f"rejected: {n_rejected} (no footprint)"))
    ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.9)
    sub = f"{len(shown)} footprints, graticule every {step:g}°"
    if len(groups) > MAX_LABELS:
        sub += ", labels left out"
    elif "superseded" in counts:
        sub += ", * = superseded"
    ax.set_title(f"{title}\n{sub}", fontsize=11)
    fig.tight_layout()
    return save(fig, out_png)


def scene_quicklooks(catalog: pd.DataFrame, out_png: Path, n: int = 12, size: int = 256) -> Path:
    """True-colour quicklooks (bands nearest 641/556/468 nm, chosen by wavelength) of the
    newest ``n`` ok scenes, each decimated to at most ``size`` px and stretched to its own
    2-98 % range; nodata is white."""
    use_agg()
    import numpy as np
    import rasterio

    from spectralearth.bands import RGB_NM, nearest_band
    from spectralearth.enmap.archive import open_scene
    from spectralearth.enmap.scene import NODATA

    ok = catalog[catalog["status"] == "ok"] if "status" in catalog.columns else catalog
    if "start_time" in ok.columns:
        ok = ok.sort_values("start_time", ascending=False)
    ok = ok.head(n)
    fig, axes = panel_grid(len(ok), "no readable scenes")
    for ax, row in zip(axes.flat, ok.itertuples(), strict=False):
        scene = open_scene(row.path)
        wl = list(scene.meta.wavelengths)
        bands = [nearest_band(wl, nm) + 1 for nm in RGB_NM]
        with rasterio.open(scene.image_path) as src:
            step = max(1, math.ceil(max(src.width, src.height) / size))
            shape = (3, math.ceil(src.height / step), math.ceil(src.width / step))
            raw = src.read(bands, out_shape=shape)
        valid = np.all(raw != NODATA, axis=0)
        rgb = raw.astype(float)
        lo, hi = np.percentile(rgb[:, valid], [2, 98]) if valid.any() else (0.0, 1.0)
        img = np.clip((rgb.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-6), 0, 1)
        img[~valid] = 1.0
        ax.imshow(img, interpolation="nearest")
        ax.set_title(f"{short_scene(str(row.scene))}", fontsize=7)
    fig.suptitle("scene quicklooks (641/556/468 nm)")
    return save(fig, out_png)
