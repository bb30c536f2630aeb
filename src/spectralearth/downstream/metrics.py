"""Downstream metrics: torchmetrics ``MetricCollection`` s that live on the model's device.

Each task reports the project's metrics and, next to them, the SpectralEarth reference
code's (``ref_*``), computed with the torchmetrics classes and settings that code uses:

* **Segmentation** (ignore index -1 never counts): ``overall_accuracy`` (micro accuracy over
  labelled pixels), ``micro_iou``, ``macro_iou``, ``macro_f1``; details ``per_class_iou``,
  ``per_class_f1``, ``confusion_matrix`` (rows = truth). torchmetrics' multiclass macro
  averages leave out classes absent from both the truth and the predictions. Reference:
  ``ref_overall_accuracy`` (``MulticlassAccuracy`` micro, global) and ``ref_micro_iou``
  (``MulticlassJaccardIndex`` micro): the same definitions as ``overall_accuracy`` and
  ``micro_iou``, computed independently.
* **Multi-label** (CORINE; threshold 0.5 on sigmoid scores): ``micro_f1``, ``macro_f1`` (over
  the classes that occur in the truth or the predictions) and ``map`` (macro average
  precision over the classes with a positive). Reference, over all K classes (a class
  without positives counts 0): ``ref_micro_accuracy``, ``ref_macro_accuracy``
  (``MultilabelAccuracy``), ``ref_micro_f1``, ``ref_macro_f1`` (``MultilabelFBetaScore``,
  beta 1), ``ref_micro_ap``, ``ref_macro_ap`` (``MultilabelAveragePrecision``).
* **Regression** (HYPERVIEW): ``normalized_mse`` (the challenge's score: each target's MSE
  divided by the MSE of the naive baseline that predicts ``baseline``, averaged over
  targets; lower is better) and ``r2`` (mean over targets); details ``per_target_mse``,
  ``per_target_r2``. Reference: ``ref_rmse`` (``MeanSquaredError(squared=False)`` over every
  output) and ``ref_loss`` (its loss, the normalised MSE of each batch, averaged over
  batches weighted by their size, as Lightning logs ``test_loss``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MultilabelAccuracy,
    MultilabelAveragePrecision,
    MultilabelF1Score,
    MultilabelFBetaScore,
)
from torchmetrics.regression import MeanSquaredError, R2Score

from spectralearth.cards import MULTILABEL, REGRESSION, SEGMENTATION

IGNORE_INDEX = -1
SEGMENTATION_METRICS = ("overall_accuracy", "micro_iou", "macro_iou", "macro_f1")
MULTILABEL_METRICS = ("micro_f1", "macro_f1", "map")
REGRESSION_METRICS = ("normalized_mse", "r2")
REFERENCE_METRICS = {
    SEGMENTATION: ("ref_overall_accuracy", "ref_micro_iou"),
    MULTILABEL: (
        "ref_micro_accuracy",
        "ref_macro_accuracy",
        "ref_micro_f1",
        "ref_macro_f1",
        "ref_micro_ap",
        "ref_macro_ap",
    ),
    REGRESSION: ("ref_rmse", "ref_loss"),
}
PROJECT_METRICS = {
    SEGMENTATION: SEGMENTATION_METRICS,
    MULTILABEL: MULTILABEL_METRICS,
    REGRESSION: REGRESSION_METRICS,
}
# The metric that picks the epoch under the recipes' `select: metric`, and its direction.
SELECTION_METRIC = {
    SEGMENTATION: ("macro_iou", "max"),
    MULTILABEL: ("map", "max"),
    REGRESSION: ("normalized_mse", "min"),
}


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics of one results row set: the project's, then the reference's."""
    return PROJECT_METRICS[task] + REFERENCE_METRICS[task]


class _LabelCounts(Metric):
    """Per class: positives in the truth, and predictions at or above 0.5."""

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.add_state("positives", torch.zeros(num_classes), dist_reduce_fx="sum")
        self.add_state("predicted", torch.zeros(num_classes), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        self.positives += target.sum(0).to(self.positives.dtype)
        self.predicted += (scores >= 0.5).sum(0).to(self.predicted.dtype)

    def compute(self) -> torch.Tensor:
        """``[2, K]``: positives, then predicted."""
        return torch.stack([self.positives, self.predicted])


class _NormalizedMSE(Metric):
    """Per target: squared errors of the model and of the constant ``baseline``."""

    full_state_update = False

    def __init__(self, baseline: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("baseline", torch.tensor(list(baseline), dtype=torch.float64))
        k = len(baseline)
        self.add_state("model_sse", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("base_sse", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.double(), target.double()
        self.model_sse += ((pred - target) ** 2).sum(0)
        self.base_sse += ((self.baseline - target) ** 2).sum(0)

    def compute(self) -> torch.Tensor:
        return self.model_sse / self.base_sse


class _BatchNormalizedMSE(Metric):
    """The reference's regression loss per batch (``custom_mse_loss``), averaged over batches
    weighted by their size."""

    full_state_update = False

    def __init__(self, baseline: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("baseline", torch.tensor(list(baseline), dtype=torch.float64))
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.double(), target.double()
        model = ((pred - target) ** 2).mean(0)
        base = ((self.baseline - target) ** 2).mean(0)
        self.total += (model / base).mean() * target.shape[0]
        self.count += target.shape[0]

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class TaskMetrics(nn.Module):
    """A task's metrics, accumulated batch by batch on the device of its inputs (move it with
    ``.to(device)``, or keep it inside a LightningModule). ``update(output, target)`` takes
    the model's output (logits; segmentation also class indices); ``compute()`` returns
    Python floats and per-class lists."""

    task = ""

    def __init__(self, num_classes: int, metrics: dict[str, Metric]) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.metrics = MetricCollection(metrics, compute_groups=False)
        self.count = 0  # images (rows) seen since the last reset

    @property
    def names(self) -> tuple[str, ...]:
        return metric_names(self.task)

    def reset(self) -> None:
        self.metrics.reset()
        self.count = 0

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:
        raise NotImplementedError


class SegmentationMetrics(TaskMetrics):
    """Per-pixel metrics (see the module doc)."""

    task = SEGMENTATION

    def __init__(self, num_classes: int) -> None:
        kw = {"num_classes": num_classes, "ignore_index": IGNORE_INDEX}
        super().__init__(
            num_classes,
            {
                "overall_accuracy": MulticlassAccuracy(average="micro", **kw),
                "micro_iou": MulticlassJaccardIndex(average="micro", **kw),
                "macro_iou": MulticlassJaccardIndex(average="macro", **kw),
                "macro_f1": MulticlassF1Score(average="macro", **kw),
                "per_class_iou": MulticlassJaccardIndex(average="none", **kw),
                "per_class_f1": MulticlassF1Score(average="none", **kw),
                "confusion_matrix": MulticlassConfusionMatrix(**kw),
                # the reference code's two, configured as it configures them
                "ref_overall_accuracy": MulticlassAccuracy(
                    average="micro", multidim_average="global", **kw
                ),
                "ref_micro_iou": MulticlassJaccardIndex(average="micro", **kw),
            },
        )

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        """``output`` logits ``[B, K, H, W]`` or class indices ``[B, H, W]``; ``target``
        ``[B, H, W]`` with -1 = ignore."""
        if output.ndim == target.ndim + 1:
            output = output.argmax(dim=1)
        target = target.to(output.device)
        self.metrics.update(output.reshape(-1), target.reshape(-1).long())

    def compute(self) -> dict[str, Any]:
        values = self.metrics.compute()
        cm = values["confusion_matrix"]
        pixels = int(cm.sum())
        out: dict[str, Any] = {"pixels": pixels, "confusion_matrix": cm.tolist()}
        for name in self.names:
            out[name] = float(values[name]) if pixels else float("nan")
        for name in ("per_class_iou", "per_class_f1"):
            out[name] = [float(v) for v in values[name]]
        return out


class MultilabelMetrics(TaskMetrics):
    """Multi-label metrics at threshold 0.5 (see the module doc)."""

    task = MULTILABEL

    def __init__(self, num_classes: int) -> None:
        k = num_classes
        super().__init__(
            k,
            {
                "micro_f1": MultilabelF1Score(k, average="micro"),
                "per_class_f1": MultilabelF1Score(k, average="none"),
                "per_class_ap": MultilabelAveragePrecision(k, average="none"),
                "counts": _LabelCounts(k),
                "ref_micro_accuracy": MultilabelAccuracy(k, average="micro"),
                "ref_macro_accuracy": MultilabelAccuracy(k, average="macro"),
                "ref_micro_f1": MultilabelFBetaScore(1.0, k, average="micro"),
                "ref_macro_f1": MultilabelFBetaScore(1.0, k, average="macro"),
                "ref_micro_ap": MultilabelAveragePrecision(k, average="micro"),
                "ref_macro_ap": MultilabelAveragePrecision(k, average="macro"),
            },
        )

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        """``output`` logits ``[B, K]``, ``target`` multi-hot ``[B, K]``."""
        scores = torch.sigmoid(output.detach().float())
        self.metrics.update(scores, target.to(scores.device).long())
        self.count += int(target.shape[0])

    def compute(self) -> dict[str, Any]:
        with warnings.catch_warnings():
            # a class without positives: its AP is 0 in the reference's macro average
            warnings.filterwarnings("ignore", message=".*[Nn]o positive samples.*")
            values = self.metrics.compute()
        positives, predicted = values["counts"]
        has_pos = positives > 0
        seen = has_pos | (predicted > 0)
        per_f1, per_ap = values["per_class_f1"], values["per_class_ap"]
        out: dict[str, Any] = {
            "micro_f1": float(values["micro_f1"]),
            "macro_f1": float(per_f1[seen].mean()) if seen.any() else float("nan"),
            "map": float(per_ap[has_pos].mean()) if has_pos.any() else float("nan"),
            "per_class_f1": [float(v) for v in per_f1],
            "per_class_ap": [
                float(v) if p else float("nan") for v, p in zip(per_ap, has_pos, strict=True)
            ],
            "images": self.count,
        }
        for name in REFERENCE_METRICS[MULTILABEL]:
            out[name] = float(values[name])
        return out


class RegressionMetrics(TaskMetrics):
    """Regression metrics against the naive ``baseline`` (see the module doc)."""

    task = REGRESSION

    def __init__(self, num_outputs: int, baseline: Sequence[float] | None = None) -> None:
        baseline = list(baseline) if baseline is not None else [0.0] * num_outputs
        if len(baseline) != num_outputs:
            raise ValueError(f"baseline has {len(baseline)} values for {num_outputs} outputs")
        super().__init__(
            num_outputs,
            {
                "per_target_mse": MeanSquaredError(num_outputs=num_outputs),
                "per_target_r2": R2Score(multioutput="raw_values"),
                "normalized": _NormalizedMSE(baseline),
                "ref_rmse": MeanSquaredError(squared=False),
                "ref_loss": _BatchNormalizedMSE(baseline),
            },
        )

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        """``output`` and ``target`` ``[B, K]``."""
        output = output.detach().float()
        target = target.to(output.device).float()
        self.metrics.update(output, target)
        self.count += int(target.shape[0])

    def compute(self) -> dict[str, Any]:
        values = self.metrics.compute()
        nan = torch.full((self.num_classes,), float("nan"))
        per_r2 = values["per_target_r2"] if self.count > 1 else nan
        return {
            "normalized_mse": float(values["normalized"].mean()),
            "r2": float(per_r2.mean()),
            "per_target_mse": [float(v) for v in values["per_target_mse"]],
            "per_target_r2": [float(v) for v in per_r2],
            "per_target_normalized_mse": [float(v) for v in values["normalized"]],
            "ref_rmse": float(values["ref_rmse"]),
            "ref_loss": float(values["ref_loss"]),
            "images": self.count,
        }


def metrics_for(
    task: str, num_classes: int, baseline: Sequence[float] | None = None
) -> TaskMetrics:
    """The metrics of ``task`` (``segmentation``, ``multilabel`` or ``regression``)."""
    if task == MULTILABEL:
        return MultilabelMetrics(num_classes)
    if task == REGRESSION:
        return RegressionMetrics(num_classes, baseline)
    if task == SEGMENTATION:
        return SegmentationMetrics(num_classes)
    raise ValueError(f"unknown task {task!r}")
