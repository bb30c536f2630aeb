"""What every figure shares: the Agg backend, image-panel grids, polygon parts, and the
atomic PNG writer. matplotlib is imported inside the functions to keep ``import
spectralearth.plots`` light."""

from __future__ import annotations

from pathlib import Path

from spectralearth.io import atomic_path


def use_agg() -> None:
    """Draw off-screen (no display on servers and in Dagster runs)."""
    import matplotlib

    matplotlib.use("Agg")


def polygons(geom) -> list:
    """The polygons of a (multi)polygon geometry (none for an empty one)."""
    if geom is None or geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom]
    return [g for g in getattr(geom, "geoms", []) if g.geom_type == "Polygon"]


def panel_grid(n: int, empty_text: str, cols_max: int = 4):
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


def save(fig, out_png: Path, caption: str | None = None) -> Path:
    """Write ``fig`` as a PNG (atomically) and close it; ``caption`` also goes into the PNG's
    ``Description`` text chunk, so a reader (or a test) finds what the figure says."""
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    metadata = {"Description": caption} if caption else None
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi, metadata=metadata)
    finally:
        plt.close(fig)
    return out_png
