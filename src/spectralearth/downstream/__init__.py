"""Downstream evaluation: datasets, recipes and protocols on Lightning, benchmarking."""

from spectralearth.downstream.datasets import (
    IGNORE_INDEX,
    SegmentationDataset,
    build_synth_landcover,
    load_stats,
)
from spectralearth.downstream.protocols import evaluate_encoder, extract_features
from spectralearth.downstream.run import (
    EVALUATION_COLUMNS,
    REPORT_SPLIT,
    TRAIN_SPLIT,
    EvaluationOutcome,
    evaluate_model,
    write_evaluations,
)

__all__ = [
    "EVALUATION_COLUMNS",
    "IGNORE_INDEX",
    "REPORT_SPLIT",
    "TRAIN_SPLIT",
    "EvaluationOutcome",
    "SegmentationDataset",
    "build_synth_landcover",
    "evaluate_encoder",
    "evaluate_model",
    "extract_features",
    "load_stats",
    "write_evaluations",
]
