"""Evaluate a pretrained checkpoint against the same backbone with random weights.

Final numbers: the head trains on the ``train`` split and is scored on ``test``
(``TRAIN_SPLIT`` / ``REPORT_SPLIT``). :func:`evaluate_checkpoint` (the ``make run`` stage)
does not use ``val``; :func:`evaluate_model` (any model, dataset and protocol) selects the
epoch on ``val`` when the dataset has one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
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
    "head",
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
            encoder,
            train_ds,
            test_ds,
            num_classes,
            settings,
            protocol=settings.protocol,
            head=settings.head,
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
                    "head": result["head"],
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


# --- any model x any dataset x any protocol (``spectralearth evaluate --model ...``) ---------

RANDOM = "random"
DEFAULT_BACKBONE = "spec_resnet18"


class BandMismatchError(ValueError):
    """A checkpoint's band count differs from the dataset's."""


def _checkpoint_run(path: Path) -> tuple[Path, dict[str, Any]]:
    folder = path.parent if path.is_file() else path
    run_file = folder / "run.json"
    if not run_file.is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint (no run.json beside the weights)")
    return folder, json.loads(run_file.read_text())


def load_encoder(
    model: str | os.PathLike,
    bands: int,
    dataset_name: str,
    backbone: str | None = None,
    seed: int = 0,
    allow_band_mismatch: bool = False,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``"random"`` (``backbone`` from random init) or a checkpoint (folder or its
    ``model.safetensors``) -> ``(encoder, {"model", "method", "backbone", "in_chans"})``.

    A checkpoint trained on another band count than ``bands`` is refused
    (:class:`BandMismatchError`) unless ``allow_band_mismatch`` and the encoder has a
    spectral adapter, which takes any band count.
    """
    from spectralearth.models import create_model, load_pretrained

    if str(model) == RANDOM:
        backbone = backbone or DEFAULT_BACKBONE
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = create_model(backbone, in_chans=bands)
        return encoder, {"model": "random_init", "method": "none", "backbone": backbone}
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"model {model!r}: no such checkpoint folder or file")
    folder, run = _checkpoint_run(path)
    in_chans = int(run.get("in_chans", 202))
    encoder = load_pretrained(folder)
    if in_chans != bands:
        has_adapter = getattr(encoder, "spectral_adapter", None) is not None
        if not (allow_band_mismatch and has_adapter):
            why = (
                "pass --allow-band-mismatch to run its spectral adapter on the dataset's bands"
                if has_adapter
                else "its first layer takes exactly that many bands (no spectral adapter)"
            )
            raise BandMismatchError(
                f"checkpoint {folder} was trained on {in_chans} bands but dataset "
                f"{dataset_name} has {bands}: refused ({why})"
            )
    return encoder, {
        "model": folder.name,
        "method": run.get("method", "unknown"),
        "backbone": run["backbone"],
        "in_chans": in_chans,
    }


def _metric_rows(result: dict[str, Any], names, base: dict[str, Any], split: str) -> list[dict]:
    return [
        {
            **base,
            "split": split,
            "metric": m,
            "value": result[m],
        }
        for m in names
    ]


def evaluate_model(
    model: str | os.PathLike,
    dataset: str | os.PathLike,
    settings: EvaluateSettings,
    protocol: str | None = None,
    *,
    head: str | None = None,
    baseline: str | None = None,
    backbone: str | None = None,
    label_fractions: tuple[float, ...] = (LABEL_FRACTION,),
    seeds: tuple[int, ...] | None = None,
    first_n: int | None = None,
    downstream_dir: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    allow_band_mismatch: bool = False,
    rf_trees: int | None = None,
    rf_max_pixels: int | None = None,
    save_model_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Evaluate ``model`` (or ``baseline="rf"``) on ``dataset`` under ``protocol`` with
    ``head`` (default ``settings.head``; see :mod:`spectralearth.models.heads`).

    ``dataset`` is a registered name or folder (see
    :func:`spectralearth.downstream.datasets.registry.resolve`). Training uses the train
    split (a seeded ``label_fraction`` of it), model selection the val split when it has
    patches, and the final numbers come from the test split only. Returns one row per metric
    (``EVALUATION_COLUMNS``) for each seed and label fraction, with split ``val`` (the
    selected epoch) and ``test``; details (confusion matrices, per-class scores) in
    ``df.attrs["details"]``. Writes nothing, unless ``save_model_dir``: the trained model
    (encoder + head, :mod:`spectralearth.models.heads`) of the first seed at the largest
    label fraction is saved there, for ``spectralearth predict`` (not for ``rf``).
    """
    from spectralearth.downstream.baselines import RF_MAX_PIXELS, RF_TREES, random_forest_baseline
    from spectralearth.downstream.datasets.registry import open_split, resolve
    from spectralearth.downstream.metrics import MULTILABEL_METRICS, SEGMENTATION_METRICS
    from spectralearth.downstream.protocols import (
        DEFAULT_FIRST_N,
        MULTILABEL,
        PROTOCOLS,
        label_subset,
    )

    protocol = protocol or settings.protocol
    head = head or settings.head
    if baseline not in (None, "rf"):
        raise ValueError(f"unknown baseline {baseline!r}; have 'rf'")
    if baseline is None and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; have {PROTOCOLS}")
    seeds = tuple(seeds) if seeds else (settings.seed,)
    source = resolve(dataset, downstream_dir, split_dir=split_dir)
    train_full = open_split(source, TRAIN_SPLIT)
    stats = train_full.stats
    test_ds = open_split(source, REPORT_SPLIT, stats)
    try:
        val_ds = open_split(source, "val", stats)
        val_ds = val_ds if len(val_ds) else None
    except FileNotFoundError:
        val_ds = None
    if len(train_full) == 0 or len(test_ds) == 0:
        raise ValueError(
            f"{source.root}: need patches in both {TRAIN_SPLIT!r} ({len(train_full)}) and "
            f"{REPORT_SPLIT!r} ({len(test_ds)})"
        )
    task, num_classes = train_full.task, train_full.num_classes
    names = MULTILABEL_METRICS if task == MULTILABEL else SEGMENTATION_METRICS

    keep = (seeds[0], max(label_fractions)) if save_model_dir and baseline is None else None
    rows, details = [], {}
    from tqdm import tqdm

    # a bar on an interactive terminal only (disable=None): logs and CI stay clean
    progress = tqdm(total=len(seeds) * len(label_fractions), desc=f"evaluate {source.name}",
                    unit="run", disable=None, leave=False)  # fmt: skip
    for seed in seeds:
        run_settings = replace(settings, seed=seed)
        if baseline is None:
            encoder, meta = load_encoder(
                model, train_full.bands, source.name, backbone, seed, allow_band_mismatch
            )
        else:
            meta = {"model": "random_forest", "method": "none", "backbone": "none"}
        for fraction in label_fractions:
            progress.update()
            train_ds = label_subset(train_full, fraction, seed)
            if baseline == "rf":
                result = random_forest_baseline(
                    train_ds,
                    test_ds,
                    num_classes,
                    seed=seed,
                    task=task,
                    n_estimators=rf_trees or RF_TREES,
                    max_pixels=rf_max_pixels or RF_MAX_PIXELS,
                )
                result_protocol, result_head = "rf", "none"
            else:
                result = evaluate_encoder(
                    encoder,
                    train_ds,
                    test_ds,
                    num_classes,
                    run_settings,
                    protocol,
                    val_ds=val_ds,
                    task=task,
                    first_n=first_n or DEFAULT_FIRST_N,
                    keep_model=keep == (seed, fraction),
                    head=head,
                )
                result_protocol, result_head = protocol, result["head"]
                if "model" in result:
                    _save_trained(
                        result.pop("model"),
                        save_model_dir,
                        meta,
                        source,
                        train_full,
                        protocol=protocol,
                        seed=seed,
                        label_fraction=fraction,
                    )
            details[(meta["model"], seed, fraction)] = result
            base = {
                **meta,
                "dataset": source.name,
                "protocol": result_protocol,
                "head": result_head,
                "label_fraction": fraction,
                "seed": seed,
                "seconds": result["seconds"],
                "peak_mem_mb": result["peak_mem_mb"],
            }
            base.pop("in_chans", None)
            if "val" in result:
                rows += _metric_rows(result["val"], names, base, "val")
            rows += _metric_rows(result, names, base, REPORT_SPLIT)
    df = pd.DataFrame(rows, columns=list(EVALUATION_COLUMNS))
    df.attrs["details"] = details
    df.attrs["classes"] = list(train_full.classes)
    return df


def _save_trained(model, folder, meta: dict[str, Any], source, train_ds, **where: Any) -> Path:
    """Save a trained model with what it needs to map a scene (classes, band statistics)."""
    from spectralearth.models.heads import save_model

    info = {
        "model": meta["model"],
        "method": meta["method"],
        "backbone": meta["backbone"],
        "dataset": source.name,
        "classes": [str(c) for c in train_ds.classes],
        "band_stats": train_ds.stats,
        "patch_size": int(train_ds[0][0].shape[-1]),
        **where,
    }
    return save_model(model, folder, info)
