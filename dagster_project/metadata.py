"""Small helpers that turn library outputs into Dagster UI metadata."""

import base64
from pathlib import Path


def png_markdown(path: Path, alt: str) -> str:
    """A PNG embedded in markdown metadata, so the UI shows the plot itself."""
    if not Path(path).exists():
        return f"({alt}: {path} not written)"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})"
