"""The scene catalogue as text: short scene names and the markdown table the Dagster UI
shows beside the coverage map (no figure here: :mod:`spectralearth.plots.catalogue`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import geopandas as gpd


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
