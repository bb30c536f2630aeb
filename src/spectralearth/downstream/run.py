"""Evaluate any model (a checkpoint, ``random`` init or the random forest) on any downstream
dataset under any protocol and recipe: :func:`evaluate_model`, the results rows contract
(:data:`EVALUATION_COLUMNS`) and their CSV (:func:`write_evaluations`).

Final numbers: the head trains on the ``train`` split (a seeded ``label_fraction`` of it),
the epoch is selected on ``val`` when the dataset has one, and the numbers come from
``test`` only (``TRAIN_SPLIT`` / ``REPORT_SPLIT``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from spectralearth.config import EvaluateSettings
from spectralearth.io import atomic_path
from spectralearth.names import NO_HEAD, NO_PROTOCOL, RANDOM_FOREST

log = logging.getLogger(__name__)

TRAIN_SPLIT = "train"
REPORT_SPLIT = "test"
LABEL_FRACTION = 1.0
# The results contract: one row per (model, metric).
EVALUATION_COLUMNS = (
    "model",
    "method",
    "backbone",
    "dataset",
    "protocol",
    "head",
    "recipe",
    "label_fraction",
    "split",
    "seed",
    "metric",
    "value",
    "seconds",
    "peak_mem_mb",  # peak RSS of this evaluation (not of the process's life)
    "peak_gpu_mem_mb",  # peak torch.cuda.max_memory_allocated of it; NaN on the CPU
    "patches",  # images of the split the row scores (its sample size) ...
    "pixels",  # ... and, for segmentation, its labelled pixels (NaN for other tasks)
    "profile",  # the checkpoint's pretraining profile (run.json); "none" for baselines
)
RANDOM = "random"
RF = RANDOM_FOREST  # the per-pixel forest: one name, as a baseline and as a model
DEFAULT_BACKBONE = "spec_resnet18"
NO_RECIPE = "none"  # the random forest has no training recipe
NO_PROFILE = "none"  # a baseline was not pretrained
IMPORTED_PROFILE = "imported"  # weights trained elsewhere (spectralearth import-weights)


def checkpoint_profile(run: Mapping[str, Any]) -> str:
    """The pretraining profile a checkpoint's ``run.json`` records (``imported`` for
    imported weights, ``unknown`` for a run.json written before profiles were recorded)."""
    if run.get("profile"):
        return str(run["profile"])
    source = run.get("source")
    if isinstance(source, Mapping) and source.get("kind") == "imported":
        return IMPORTED_PROFILE
    return "unknown"


@dataclass(frozen=True, eq=False)
class EvaluationOutcome:
    """What :func:`evaluate_model` returns.

    ``rows``: one row per metric (:data:`EVALUATION_COLUMNS`) for each seed and label
    fraction, split ``val`` (the selected epoch) and ``test``. ``details``: the full results
    per ``(model, seed, label_fraction)`` (confusion matrices, per-class scores, losses,
    timings). ``classes``: the dataset's class (or target) names. ``trained_model_dir``: the
    saved trained model, when one was asked for.
    """

    rows: pd.DataFrame
    details: dict[tuple[str, int, float], dict[str, Any]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    trained_model_dir: Path | None = None
    recipe: str = "cpu"

    def test_rows(self) -> pd.DataFrame:
        return self.rows[self.rows["split"] == REPORT_SPLIT]

    def metadata(self) -> dict[str, Any]:
        """Counts and the test metrics (mean over seeds) for a UI."""
        test = self.test_rows()
        means = test.groupby(["label_fraction", "metric"])["value"].mean()
        return {
            "rows": len(self.rows),
            "recipe": self.recipe,
            "trained_model_dir": str(self.trained_model_dir) if self.trained_model_dir else None,
            "test": {f"{m}@{f:g}": float(v) for (f, m), v in means.items()},
        }

    def summary(self) -> str:
        """The test metrics, one line per model / protocol / head / fraction / seed."""
        table = self.test_rows().pivot_table(
            index=["model", "protocol", "head", "label_fraction", "seed"],
            columns="metric",
            values="value",
        )
        return table.round(4).to_string()


def write_evaluations(rows: pd.DataFrame | EvaluationOutcome, path: str | os.PathLike) -> Path:
    """Write the evaluation rows as CSV atomically (contract columns first)."""
    df = rows.rows if isinstance(rows, EvaluationOutcome) else rows
    path = Path(path)
    cols = [c for c in EVALUATION_COLUMNS if c in df.columns]
    cols += [c for c in df.columns if c not in cols]
    with atomic_path(path) as tmp:
        df[cols].to_csv(tmp, index=False)
    return path


class BandMismatchError(ValueError):
    """A checkpoint without a spectral adapter cannot take the dataset's band count."""


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

    A checkpoint trained on another band count than ``bands`` runs its spectral adapter on
    the dataset's bands (the adapter takes any band count; the change is logged and
    recorded as ``band_change``); one without an adapter is refused
    (:class:`BandMismatchError`, saying why). ``allow_band_mismatch`` is accepted for older
    callers and changes nothing.
    """
    from spectralearth.models import create_model, load_pretrained

    del allow_band_mismatch  # the adapter decides, not a flag
    if str(model) == RANDOM:
        backbone = backbone or DEFAULT_BACKBONE
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = create_model(backbone, in_chans=bands)
        return encoder, {
            "model": "random_init",
            "method": "none",
            "backbone": backbone,
            "profile": NO_PROFILE,
        }
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"model {model!r}: no such checkpoint folder or file")
    folder, run = _checkpoint_run(path)
    in_chans = int(run.get("in_chans", 202))
    encoder = load_pretrained(folder)
    meta = {
        "model": folder.name,
        "method": run.get("method", "unknown"),
        "backbone": run["backbone"],
        "in_chans": in_chans,
        "profile": checkpoint_profile(run),
    }
    if in_chans != bands:
        if getattr(encoder, "spectral_adapter", None) is None:
            raise BandMismatchError(
                f"checkpoint {folder} was trained on {in_chans} bands but dataset "
                f"{dataset_name} has {bands}: refused (its first layer takes exactly "
                f"{in_chans} bands; it has no spectral adapter)"
            )
        log.info(
            "checkpoint %s was trained on %d bands, dataset %s has %d: its spectral adapter "
            "takes them",
            folder,
            in_chans,
            dataset_name,
            bands,
        )
        meta["band_change"] = f"{in_chans} -> {bands}"
    return encoder, meta


def _metric_rows(result: dict[str, Any], names, base: dict[str, Any], split: str) -> list[dict]:
    return [{**base, "split": split, "metric": m, "value": result[m]} for m in names]


def _dataset_stats(source, recipe) -> Mapping[str, Any] | None:
    """The band statistics the recipe normalises with: the published ones of the dataset's
    sensor (``reference``), or None (the train split's, computed by the loader)."""
    if recipe.normalisation != "reference":
        return None
    from spectralearth.downstream.datasets.registry import sensor_of
    from spectralearth.downstream.normalisation import reference_stats

    sensor, bands = sensor_of(source)
    return reference_stats(sensor, bands, recipe.reference_stats)


def evaluate_model(
    model: str | os.PathLike,
    dataset: str | os.PathLike,
    settings: EvaluateSettings,
    protocol: str | None = None,
    *,
    head: str | None = None,
    recipe: str | None = None,
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
) -> EvaluationOutcome:
    """Evaluate ``model`` (or ``baseline="random_forest"``) on ``dataset`` under ``protocol`` with the
    recipe ``recipe`` (default ``settings.recipe``, see ``params.yaml evaluate.recipes``) and
    ``head`` (default the recipe's; see :mod:`spectralearth.models.heads`).

    ``dataset`` is a registered name or folder (see
    :func:`spectralearth.downstream.datasets.registry.resolve`). Training uses the train
    split (a seeded ``label_fraction`` of it), model selection the val split when it has
    patches, and the final numbers come from the test split only. Normalisation is the
    recipe's: the dataset's train statistics, or the published statistics of its sensor.
    A checkpoint with a spectral adapter takes any band count (the change is logged).

    Writes nothing, unless ``save_model_dir``: the trained model (encoder + head,
    :mod:`spectralearth.models.heads`) of the first seed at the largest label fraction is
    saved there, for ``spectralearth predict`` (not for ``rf``). ``allow_band_mismatch`` is
    accepted for older callers and changes nothing.
    """
    from spectralearth.downstream.baselines import RF_MAX_PIXELS, RF_TREES, random_forest_baseline
    from spectralearth.downstream.datasets.registry import open_split, resolve
    from spectralearth.downstream.metrics import metric_names
    from spectralearth.downstream.protocols import (
        DEFAULT_FIRST_N,
        PROTOCOLS,
        label_subset,
    )

    del allow_band_mismatch
    protocol = protocol or settings.protocol
    if baseline not in (None, RF):
        raise ValueError(f"unknown baseline {baseline!r}; have {RF!r}")
    if baseline is None and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; have {PROTOCOLS}")
    seeds = tuple(seeds) if seeds else (settings.seed,)
    source = resolve(dataset, downstream_dir, split_dir=split_dir)
    recipe_name = recipe or settings.recipe
    chosen = settings.recipe_for(source.name, recipe_name)
    size = {"resize_to": chosen.resize_to}
    train_full = open_split(source, TRAIN_SPLIT, _dataset_stats(source, chosen), **size)
    stats = train_full.stats
    test_ds = open_split(source, REPORT_SPLIT, stats, **size)
    try:
        val_ds = open_split(source, "val", stats, **size)
        val_ds = val_ds if len(val_ds) else None
    except FileNotFoundError:
        val_ds = None
    if len(train_full) == 0 or len(test_ds) == 0:
        raise ValueError(
            f"{source.root}: need patches in both {TRAIN_SPLIT!r} ({len(train_full)}) and "
            f"{REPORT_SPLIT!r} ({len(test_ds)})"
        )
    task, num_classes = train_full.task, train_full.num_classes
    target_baseline = getattr(train_full, "target_baseline", None)
    names = metric_names(task)

    keep = (seeds[0], max(label_fractions)) if save_model_dir and baseline is None else None
    rows, details, saved = [], {}, None
    from tqdm import tqdm

    # a bar on an interactive terminal only (disable=None): logs and CI stay clean
    progress = tqdm(total=len(seeds) * len(label_fractions), desc=f"evaluate {source.name}",
                    unit="run", disable=None, leave=False)  # fmt: skip
    for seed in seeds:
        run_settings = replace(settings, seed=seed)
        if baseline is None:
            encoder, meta = load_encoder(model, train_full.bands, source.name, backbone, seed)
        else:
            meta = {
                "model": RANDOM_FOREST,
                "method": "none",
                "backbone": "none",
                "profile": NO_PROFILE,
            }
        for fraction in label_fractions:
            progress.update()
            train_ds = label_subset(train_full, fraction, seed)
            if baseline == RF:
                result = random_forest_baseline(
                    train_ds,
                    test_ds,
                    num_classes,
                    seed=seed,
                    task=task,
                    n_estimators=rf_trees or RF_TREES,
                    max_pixels=rf_max_pixels or RF_MAX_PIXELS,
                    baseline=target_baseline,
                )
                where = {"protocol": NO_PROTOCOL, "head": NO_HEAD, "recipe": NO_RECIPE}
            else:
                from spectralearth.downstream.protocols import evaluate_encoder

                result = evaluate_encoder(
                    encoder,
                    train_ds,
                    test_ds,
                    num_classes,
                    chosen,
                    protocol,
                    val_ds=val_ds,
                    task=task,
                    first_n=first_n or DEFAULT_FIRST_N,
                    keep_model=keep == (seed, fraction),
                    head=head,
                    seed=seed,
                    runtime=_runtime(run_settings),
                    baseline=target_baseline,
                )
                where = {"protocol": protocol, "head": result["head"], "recipe": recipe_name}
                if "model" in result:
                    saved = _save_trained(
                        result.pop("model"),
                        save_model_dir,
                        meta,
                        source,
                        train_full,
                        protocol=protocol,
                        recipe=recipe_name,
                        normalisation=chosen.normalisation,
                        seed=seed,
                        label_fraction=fraction,
                    )
            details[(meta["model"], seed, fraction)] = result
            base = {
                **{
                    k: v for k, v in meta.items() if k in ("model", "method", "backbone", "profile")
                },
                **where,
                "dataset": source.name,
                "label_fraction": fraction,
                "seed": seed,
                "seconds": result["seconds"],
                "peak_mem_mb": result["peak_mem_mb"],
                "peak_gpu_mem_mb": result["peak_gpu_mem_mb"],
            }
            if "val" in result:
                sizes = _sample_size(val_ds, result["val"], task)
                rows += _metric_rows(result["val"], names, {**base, **sizes}, "val")
            sizes = _sample_size(test_ds, result, task)
            rows += _metric_rows(result, names, {**base, **sizes}, REPORT_SPLIT)
    progress.close()
    return EvaluationOutcome(
        rows=pd.DataFrame(rows, columns=list(EVALUATION_COLUMNS)),
        details=details,
        classes=list(train_full.classes),
        trained_model_dir=saved,
        recipe=NO_RECIPE if baseline else recipe_name,
    )


def _sample_size(dataset, result: Mapping[str, Any], task: str) -> dict[str, float]:
    """The size of the split a result scores: its images, and for segmentation the
    labelled pixels its metrics counted (``pixels`` of the metrics' confusion matrix)."""
    from spectralearth.cards import SEGMENTATION

    pixels = result.get("pixels") if task == SEGMENTATION else None
    return {
        "patches": len(dataset),
        "pixels": float(pixels) if pixels is not None else float("nan"),
    }


def _runtime(settings: EvaluateSettings):
    from spectralearth.downstream.protocols import Runtime

    return Runtime.of(settings)


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
