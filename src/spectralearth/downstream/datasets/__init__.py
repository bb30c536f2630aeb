"""Downstream datasets (torchgeo style: each module's docstring is its dataset card)."""

from spectralearth.downstream.datasets.base import (
    MULTILABEL,
    SEGMENTATION,
    SENSOR_BANDS,
    DatasetCard,
    MissingPatchesError,
    ReleasedDataset,
    band_stats,
    get_card,
    read_split,
)
from spectralearth.downstream.datasets.synth_landcover import (
    IGNORE_INDEX,
    SPLITS,
    SegmentationDataset,
    build_synth_landcover,
    load_stats,
)

__all__ = [
    "IGNORE_INDEX",
    "MULTILABEL",
    "SEGMENTATION",
    "SENSOR_BANDS",
    "SPLITS",
    "DatasetCard",
    "MissingPatchesError",
    "ReleasedDataset",
    "SegmentationDataset",
    "band_stats",
    "build_synth_landcover",
    "get_card",
    "load_stats",
    "read_split",
]
