"""Evaluate a pretrained checkpoint against the same backbone with random weights.

Final numbers: the head trains on the ``train`` split and is scored on ``test``
(``TRAIN_SPLIT`` / ``REPORT_SPLIT``); ``val`` is not used yet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from spectralearth.config import EvaluateSettings
from spectralearth.downstream.datasets.synth_landcover import SegmentationDataset, load_stats
from spectralearth.downstream.protocols import evaluate_encoder
from spectralearth.io import atomic_path

TRAIN_SPLIT = "train"
REPORT_SPLIT = "test"
LABEL_FRACTION = 1.0
METRICS = ("overall_accuracy", "macro_f1")
# The results contract: one row per (model, metric).
EVALUATION_COLUMNS = (
    "model",
    "method",
    "backbone",
    "dataset",
    "protocol",
    "label_fraction",
    "split",
    "seed",
    "metric",
    "value",
    "seconds",
    "peak_mem_mb",
)


def evaluate_checkpoint(
    checkpoint_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    stats: str | os.PathLike | Mapping[str, Any],
    settings: EvaluateSettings,
) -> pd.DataFrame:
    """Score the checkpoint's encoder and a random-init encoder of the same backbone.

    ``checkpoint_dir`` holds ``model.safetensors`` + ``run.json`` (read by
    ``spectralearth.models.load_pretrained``); ``dataset_dir`` is a segmentation dataset in
    the released-data layout (see ``datasets.synth_landcover``); ``stats`` is the band
    statistics dict or JSON path. Returns the rows of ``EVALUATION_COLUMNS`` (model =
    "pretrained" / "random_init"); the full per-model results (confusion matrices,
    per-class F1, timings) are in ``df.attrs["details"]``. Writes nothing.
    """
    from spectralearth.models import create_model, load_pretrained

    checkpoint_dir = Path(checkpoint_dir)
    run = json.loads((checkpoint_dir / "run.json").read_text())
    backbone = run["backbone"]
    in_chans = int(run.get("in_chans", 202))
    stats = load_stats(stats)

    train_ds = SegmentationDataset(dataset_dir, TRAIN_SPLIT, stats)
    test_ds = SegmentationDataset(dataset_dir, REPORT_SPLIT, stats)
    if len(train_ds) == 0 or len(test_ds) == 0:
        raise ValueError(
            f"{dataset_dir}: need patches in both {TRAIN_SPLIT!r} ({len(train_ds)}) and "
            f"{REPORT_SPLIT!r} ({len(test_ds)})"
        )
    num_classes = train_ds.num_classes
    if num_classes is None:
        raise ValueError(f"{dataset_dir}: classes.json is missing")

    pretrained = load_pretrained(checkpoint_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        random_init = create_model(backbone, in_chans=in_chans)

    rows, details = [], {}
    for model_name, method, encoder in (
        ("pretrained", run.get("method", "unknown"), pretrained),
        ("random_init", "none", random_init),
    ):
        result = evaluate_encoder(
            encoder, train_ds, test_ds, num_classes, settings, protocol=settings.protocol
        )
        details[model_name] = result
        for metric in METRICS:
            rows.append(
                {
                    "model": model_name,
                    "method": method,
                    "backbone": backbone,
                    "dataset": settings.task,
                    "protocol": result["protocol"],
                    "label_fraction": LABEL_FRACTION,
                    "split": REPORT_SPLIT,
                    "seed": settings.seed,
                    "metric": metric,
                    "value": result[metric],
                    "seconds": result["seconds"],
                    "peak_mem_mb": result["peak_mem_mb"],
                }
            )
    df = pd.DataFrame(rows, columns=list(EVALUATION_COLUMNS))
    df.attrs["details"] = details
    df.attrs["classes"] = train_ds.classes
    return df


def write_evaluations(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the evaluation rows as CSV atomically (contract columns first)."""
    path = Path(path)
    cols = [c for c in EVALUATION_COLUMNS if c in df.columns]
    cols += [c for c in df.columns if c not in cols]
    with atomic_path(path) as tmp:
        df[cols].to_csv(tmp, index=False)
    return path
