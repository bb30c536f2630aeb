"""Downstream datasets (torchgeo style: each module's docstring is its dataset card)."""

from spectralearth.downstream.datasets.synth_landcover import (
    IGNORE_INDEX,
    SPLITS,
    SegmentationDataset,
    build_synth_landcover,
    load_stats,
)

__all__ = [
    "IGNORE_INDEX",
    "SPLITS",
    "SegmentationDataset",
    "build_synth_landcover",
    "load_stats",
]
