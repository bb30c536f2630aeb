"""Catalogue figures and tables: a coverage map (PNG) and a compact markdown table.

No basemap ships with the project, so the map draws its own context: a lon/lat graticule,
the extent box of all footprints, and the centroids labelled with short datatake ids.
matplotlib is imported inside the functions (Agg backend) to keep ``import
spectralearth.plots`` light.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from spectralearth.io import atomic_path

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


def _name_match(scene: str):
    from spectralearth.enmap.l2a import PRODUCT_NAME_RE

    return PRODUCT_NAME_RE.match(scene)


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def short_datatake(row: pd.Series) -> str:
    """``DT9119`` for datatake 0000009119 (leading zeros dropped); the scene name otherwise."""
    dt = row.get("datatake")
    if _missing(dt):
        m = _name_match(str(row.get("scene", "")))
        dt = m["datatake"] if m else None
    if _missing(dt):
        return str(row.get("scene", "?"))[:16]
    return f"DT{int(dt)}" if str(dt).isdigit() else f"DT{dt}"


def short_scene(scene: str) -> str:
    """``DT9119_005_V010400_20241106T181745`` (datatake, tile, version, processing time).

    The start time is left out (tables show the date); the processing time is kept because
    it is what tells a superseded product from its newer processing. Names that do not
    follow the L2A convention are returned as they are.
    """
    m = _name_match(scene)
    if not m:
        return scene
    return f"DT{int(m['datatake'])}_{m['tile']}_V{m['version']}_{m['processed']}"


def _graticule_step(span_deg: float) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 30.0):
        if span_deg / step <= 6:
            return step
    return 60.0


def _polygons(geom) -> list:
    if geom is None or geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom]
    return [g for g in getattr(geom, "geoms", []) if g.geom_type == "Polygon"]


def _panel_grid(n: int, empty_text: str, cols_max: int = 4):
    """A figure of ``n`` axis-less image panels, ``cols_max`` to a row (text when empty)."""
    import matplotlib.pyplot as plt

    cols = max(1, min(cols_max, n))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if n == 0:
        axes[0, 0].text(0.5, 0.5, empty_text, ha="center", va="center")
    return fig, axes


def _save(fig, out_png: Path) -> Path:
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi)
    finally:
        plt.close(fig)
    return out_png


def coverage_map(
    catalog: gpd.GeoDataFrame,
    out_png: Path,
    title: str = "EnMAP L2A scene coverage",
) -> Path:
    """PNG map of the footprints (lon/lat), coloured by status; returns ``out_png``.

    Rejected rows have no footprint and are only counted in the subtitle. An empty
    catalogue (or one with no footprint) gives a PNG that says "no scenes".
    """
    import matplotlib

    matplotlib.use("Agg")
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
        return _save(fig, out_png)

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
        for poly in _polygons(row.geometry):
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
    return _save(fig, out_png)


def _md_cell(v: Any, max_len: int = 80) -> str:
    text = "" if _missing(v) else str(v)
    text = " ".join(text.split())  # newlines/tabs would break the row
    if len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return text.replace("|", "\\|")


def _pct(v: Any) -> str:
    if _missing(v):
        return "–"
    try:
        return f"{100.0 * float(v):.1f}"
    except (TypeError, ValueError):
        return "–"


def catalog_table_markdown(catalog: gpd.GeoDataFrame) -> str:
    """Markdown table: one line per catalogue row under a header (built by hand, no tabulate)."""
    header = ["scene", "date", "status", "cloud %", "snow %", "reason"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---", "---", "---:", "---:", "---"]) + "|",
    ]
    for _, row in catalog.iterrows():
        start = row.get("start_time")
        date = "–" if _missing(start) else pd.Timestamp(start).strftime("%Y-%m-%d")
        cells = [
            _md_cell(short_scene(str(row.get("scene", ""))), 60),
            date,
            _md_cell(row.get("status")),
            _pct(row.get("cloud_frac")),
            _pct(row.get("snow_frac")),
            _md_cell(row.get("reason")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rgb_quicklooks(
    patches_root: Path, index: pd.DataFrame, out_png: Path, n: int = 8, seed: int = 0
) -> Path:
    """True-colour quicklooks (bands nearest 641/556/468 nm) of a seeded sample of patches,
    each stretched to its own 2-98 % range, titled with the patch id and date."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import rasterio

    from spectralearth.bands import RGB_NM, nearest_band

    sample = index.sample(min(n, len(index)), random_state=seed) if len(index) else index
    fig, axes = _panel_grid(len(sample), "no patches")
    for ax, row in zip(axes.flat, sample.itertuples(), strict=False):
        with rasterio.open(Path(patches_root) / row.path) as src:
            wl = [float(x) for x in src.tags()["wavelengths"].split(",")]
            rgb = src.read([nearest_band(wl, nm) + 1 for nm in RGB_NM]).astype(float)
        lo, hi = np.percentile(rgb, [2, 98])
        ax.imshow(np.clip((rgb.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-6), 0, 1))
        ax.set_title(f"{row.patch_id}\n{pd.Timestamp(row.datetime):%Y-%m-%d}", fontsize=8)
    fig.suptitle("RGB quicklooks (641/556/468 nm)")
    return _save(fig, out_png)


def dataset_summary(index: pd.DataFrame) -> dict:
    """The numbers a user checks first about a curated dataset."""
    if len(index) == 0:
        return {"patches": 0, "locations": 0, "multitemporal_share": 0.0, "scenes": 0}
    dates = index.groupby("location_id")["scene_id"].nunique()
    per_scene = index.groupby("scene_id").size()
    return {
        "patches": int(len(index)),
        "locations": int(index["location_id"].nunique()),
        "multitemporal_share": float((dates > 1).mean()),
        "scenes": int(index["scene_id"].nunique()),
        "patches_per_scene_mean": float(per_scene.mean()),
        "patches_per_scene_max": int(per_scene.max()),
        **{f"split_{k}": int(v) for k, v in index["split"].value_counts().items()},
    }


def locations_map(index: pd.DataFrame, out_png: Path) -> Path:
    """Patch footprints (WGS84) coloured by how many dates each location has."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 6))
    if len(index) == 0 or "geometry" not in index:
        ax.text(0.5, 0.5, "no patches", ha="center", va="center")
        ax.axis("off")
        return _save(fig, out_png)
    dates = index.groupby("location_id")["scene_id"].nunique()
    first = index.drop_duplicates("location_id")
    cmap = plt.get_cmap("viridis", max(int(dates.max()), 2))
    for row in first.itertuples():
        n = int(dates[row.location_id])
        for poly in _polygons(row.geometry):
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
    return _save(fig, out_png)


# --- downstream evaluation figures ---------------------------------------------------------


def confusion_matrix_plot(cm, classes: list[str], out_png: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = truth), with the pixel counts' shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(cm, dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(cm)
    side = max(4.0, 0.45 * k + 2.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=90)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    labels = [str(c) for c in classes][:k] + [str(i) for i in range(len(classes), k)]
    ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if share[i, j] >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{share[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    ax.set_title(title or "confusion matrix", fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def per_class_bars(
    values: dict[str, list[float]],
    classes: list[str],
    out_png: Path,
    title: str = "",
    ylabel: str = "IoU",
) -> Path:
    """Grouped bars per class, one group member per entry of ``values`` (model -> scores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = len(classes)
    n = max(1, len(values))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * k * max(1, n / 2) + 2), 3.6), dpi=90)
    x = np.arange(k)
    for i, (name, scores) in enumerate(values.items()):
        ax.bar(x + (i - (n - 1) / 2) * width, np.nan_to_num(scores[:k]), width, label=name)
    ax.set_xticks(x, [str(c) for c in classes], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if len(values) > 1:
        ax.legend(fontsize=8)
    ax.set_title(title or f"per-class {ylabel}", fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def loss_curve(losses: list[float], out_png: Path, title: str = "") -> Path:
    """Training loss per optimizer step, with a moving average when the run is long."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=90)
    y = np.asarray(losses, dtype=float)
    ax.plot(np.arange(1, len(y) + 1), y, lw=1, alpha=0.6, label="loss")
    window = max(1, len(y) // 20)
    if window > 1:
        smooth = np.convolve(y, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window, len(y) + 1), smooth, lw=2, label=f"mean of {window}")
        ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.set_title(title or "pretraining loss", fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def class_spectra(
    means: dict[str, list[float]], wavelengths, out_png: Path, title: str = ""
) -> Path:
    """Mean reflectance spectrum per class, the removed water-vapour ranges shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from spectralearth.bands import WATER_VAPOUR_RANGES_NM, in_water_vapour

    wl = np.asarray(wavelengths, dtype=float)
    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=90)
    for lo, hi in WATER_VAPOUR_RANGES_NM:
        ax.axvspan(
            lo, hi, color="0.85", zorder=0, label="removed (water vapour)" if lo < 1500 else None
        )
    for name, spectrum in means.items():
        y = np.asarray(spectrum, dtype=float) / 10000.0
        y = np.where(in_water_vapour(wl), np.nan, y)  # no line across the removed ranges
        ax.plot(wl, y, lw=1.2, label=str(name))
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("reflectance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or "mean spectrum per class", fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def class_map_png(map_tif: Path, out_png: Path, max_size: int = 600) -> Path:
    """A quicklook of a uint8 class map GeoTIFF in its own colour table (255 = masked)."""
    import matplotlib

    matplotlib.use("Agg")
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
    return _save(fig, Path(out_png))


def scene_quicklooks(catalog: pd.DataFrame, out_png: Path, n: int = 12, size: int = 256) -> Path:
    """True-colour quicklooks (bands nearest 641/556/468 nm, chosen by wavelength) of the
    newest ``n`` ok scenes, each decimated to at most ``size`` px and stretched to its own
    2-98 % range; nodata is white."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import rasterio

    from spectralearth.bands import RGB_NM, nearest_band
    from spectralearth.enmap.archive import open_scene
    from spectralearth.enmap.scene import NODATA

    ok = catalog[catalog["status"] == "ok"] if "status" in catalog.columns else catalog
    if "start_time" in ok.columns:
        ok = ok.sort_values("start_time", ascending=False)
    ok = ok.head(n)
    fig, axes = _panel_grid(len(ok), "no readable scenes")
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
    return _save(fig, out_png)
