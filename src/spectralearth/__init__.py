"""spectralearth: from raw EnMAP L2A scenes to benchmarked hyperspectral foundation models.

A plain library (no Dagster import). Each pipeline stage is one function here; the CLI,
the Dagster assets and the DVC stages all call it.
"""

__version__ = "0.1.0"
