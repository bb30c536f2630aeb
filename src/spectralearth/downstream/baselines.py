"""Baselines without an encoder: a per-pixel random forest on the bands (scikit-learn).

Segmentation: every labelled train pixel's band vector is a sample (a seeded random
``max_pixels`` of them when there are more); the forest predicts every labelled test pixel.
Multi-label: each patch's mean spectrum is a sample and the multi-hot vector its target
(scikit-learn's multi-output forest). Regression: each image's mean spectrum is a sample
and its targets the forest's outputs (a multi-output regression forest). The metrics are
the same torchmetrics as the encoder protocols (:mod:`spectralearth.downstream.metrics`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from spectralearth.cards import MULTILABEL, REGRESSION
from spectralearth.downstream.metrics import IGNORE_INDEX, metrics_for
from spectralearth.memory import PeakMemory

RF_TREES = 100
RF_MAX_PIXELS = 20_000


def _pixels(ds: Dataset, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for images, masks in DataLoader(ds, batch_size=batch_size):
        x = images.permute(0, 2, 3, 1).reshape(-1, images.shape[1])
        y = masks.reshape(-1)
        keep = y != IGNORE_INDEX
        xs.append(x[keep].numpy())
        ys.append(y[keep].numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _patches(ds: Dataset, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for images, target in DataLoader(ds, batch_size=batch_size):
        xs.append(images.mean(dim=(2, 3)).numpy())
        ys.append(target.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def random_forest_baseline(
    train_ds: Dataset,
    test_ds: Dataset,
    num_classes: int,
    seed: int = 0,
    task: str = "segmentation",
    n_estimators: int = RF_TREES,
    max_pixels: int = RF_MAX_PIXELS,
    n_jobs: int = -1,
    baseline: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Fit a random forest on ``train_ds`` pixels (or patch means), score ``test_ds``
    (``baseline``: the regression metrics' naive prediction, default 0)."""
    t0 = time.perf_counter()
    with PeakMemory() as peak:
        result = _fit_and_score(
            train_ds, test_ds, num_classes, seed, task, n_estimators, max_pixels, n_jobs, baseline
        )
    result.update(
        protocol="none",
        task=task,
        num_classes=num_classes,
        n_estimators=n_estimators,
        seconds=time.perf_counter() - t0,
        peak_mem_mb=peak.rss_mb,
        peak_gpu_mem_mb=peak.gpu_mb,
    )
    return result


def _fit_and_score(
    train_ds, test_ds, num_classes, seed, task, n_estimators, max_pixels, n_jobs, baseline
) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    kw = {"n_estimators": n_estimators, "random_state": seed, "n_jobs": n_jobs}
    metrics = metrics_for(task, num_classes, baseline)
    if task == REGRESSION:
        x, y = _patches(train_ds)
        forest = RandomForestRegressor(**kw).fit(x, y)
        xt, yt = _patches(test_ds)
        metrics.update(
            torch.from_numpy(forest.predict(xt).reshape(len(xt), -1)), torch.from_numpy(yt)
        )
        n_train = len(x)
    elif task == MULTILABEL:
        forest = RandomForestClassifier(**kw)
        x, y = _patches(train_ds)
        forest.fit(x, y)
        xt, yt = _patches(test_ds)
        proba = forest.predict_proba(xt)
        scores = np.zeros((len(xt), num_classes))
        for k, (p, classes) in enumerate(zip(proba, forest.classes_, strict=True)):
            pos = np.flatnonzero(classes == 1)
            scores[:, k] = p[:, pos[0]] if len(pos) else 0.0
        # metrics take logits: logit(p) with p clipped away from 0 and 1
        scores = np.clip(scores, 1e-6, 1 - 1e-6)
        metrics.update(torch.from_numpy(np.log(scores / (1 - scores))), torch.from_numpy(yt))
        n_train = len(x)
    else:
        x, y = _pixels(train_ds)
        if len(x) > max_pixels:
            keep = np.random.default_rng(seed).choice(len(x), max_pixels, replace=False)
            x, y = x[keep], y[keep]
        if len(x) == 0:
            raise ValueError("no labelled train pixel for the random forest")
        forest = RandomForestClassifier(**kw).fit(x, y)
        for images, masks in DataLoader(test_ds, batch_size=16):
            flat = images.permute(0, 2, 3, 1).reshape(-1, images.shape[1]).numpy()
            pred = torch.from_numpy(forest.predict(flat).astype(np.int64))
            metrics.update(pred.reshape(masks.shape), masks)
        n_train = len(x)
    result = metrics.compute()
    result["train_samples"] = int(n_train)
    return result
