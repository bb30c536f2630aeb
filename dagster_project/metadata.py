"""Stage results (plain data, see spectralearth.stages.result) as Dagster UI metadata."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import dagster as dg

from spectralearth.stages.result import Figure, Markdown


def png_markdown(path: Path, alt: str) -> str:
    """A PNG embedded in markdown metadata, so the UI shows the plot itself."""
    if not Path(path).exists():
        return f"({alt}: {path} not written)"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})"


def to_dagster(metadata: dict) -> dict:
    """Paths as paths, markdown and figures rendered, lists and dicts as JSON; None dropped."""
    out = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, Figure):
            out[key] = dg.MetadataValue.md(png_markdown(value.path, value.alt))
        elif isinstance(value, Markdown):
            out[key] = dg.MetadataValue.md(str(value))
        elif isinstance(value, Path):
            out[key] = dg.MetadataValue.path(str(value))
        elif isinstance(value, list | dict | tuple):
            out[key] = dg.MetadataValue.json(value if not isinstance(value, tuple) else list(value))
        elif isinstance(value, float) and math.isnan(value):
            out[key] = dg.MetadataValue.float(float("nan"))
        else:
            out[key] = value
    return out


def materialized(result, **extra) -> dg.MaterializeResult:
    """A stage result (plus ``extra`` metadata) as the asset's materialization."""
    return dg.MaterializeResult(metadata=to_dagster({**result.metadata(), **extra}))
