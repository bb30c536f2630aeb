"""Downstream metrics from torchmetrics, accumulated batch by batch.

Segmentation (ignore index -1 never counts): ``overall_accuracy`` (micro accuracy over
labelled pixels), ``micro_iou``, ``macro_iou``, ``macro_f1``; details: ``per_class_iou``,
``per_class_f1``, ``confusion_matrix`` (rows = truth). torchmetrics' macro averages leave
out classes absent from both the truth and the predictions.

Multi-label: ``micro_f1``, ``macro_f1`` (threshold 0.5 on sigmoid scores) and ``map``
(macro average precision over the classes with at least one positive).
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)

IGNORE_INDEX = -1
SEGMENTATION_METRICS = ("overall_accuracy", "micro_iou", "macro_iou", "macro_f1")
MULTILABEL_METRICS = ("micro_f1", "macro_f1", "map")


class SegmentationMetrics:
    """Per-pixel torchmetrics metrics, accumulated over batches."""

    names = SEGMENTATION_METRICS

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        kw = {"num_classes": num_classes, "ignore_index": IGNORE_INDEX}
        self.metrics = {
            "overall_accuracy": MulticlassAccuracy(average="micro", **kw),
            "micro_iou": MulticlassJaccardIndex(average="micro", **kw),
            "macro_iou": MulticlassJaccardIndex(average="macro", **kw),
            "macro_f1": MulticlassF1Score(average="macro", **kw),
            "per_class_iou": MulticlassJaccardIndex(average="none", **kw),
            "per_class_f1": MulticlassF1Score(average="none", **kw),
            "confusion_matrix": MulticlassConfusionMatrix(**kw),
        }

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred`` class indices (or logits ``[B, K, H, W]``), ``target`` ``[B, H, W]``."""
        if pred.ndim == target.ndim + 1:
            pred = pred.argmax(dim=1)
        pred, target = pred.reshape(-1).cpu(), target.reshape(-1).long().cpu()
        for m in self.metrics.values():
            m.update(pred, target)

    def compute(self) -> dict[str, Any]:
        cm = self.metrics["confusion_matrix"].compute()
        out: dict[str, Any] = {"pixels": int(cm.sum()), "confusion_matrix": cm.tolist()}
        for name in self.names:
            out[name] = float(self.metrics[name].compute()) if out["pixels"] else float("nan")
        for name in ("per_class_iou", "per_class_f1"):
            out[name] = [float(v) for v in self.metrics[name].compute()]
        return out


class MultilabelMetrics:
    """Micro/macro F1 at 0.5 and mAP over the classes that have a positive."""

    names = MULTILABEL_METRICS

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.scores.append(torch.sigmoid(logits.detach().float()).cpu())
        self.targets.append(target.detach().cpu().long())

    def compute(self) -> dict[str, Any]:
        scores, target = torch.cat(self.scores), torch.cat(self.targets)
        k = self.num_classes
        micro = MultilabelF1Score(k, average="micro")(scores, target)
        per_f1 = MultilabelF1Score(k, average="none")(scores, target)
        has_pos = target.sum(0) > 0
        seen = has_pos | ((scores >= 0.5).sum(0) > 0)
        if has_pos.any():
            ap = MultilabelAveragePrecision(int(has_pos.sum()), average="none")(
                scores[:, has_pos], target[:, has_pos]
            )
            mean_ap = float(ap.mean())
        else:
            mean_ap = float("nan")
        return {
            "micro_f1": float(micro),
            "macro_f1": float(per_f1[seen].mean()) if seen.any() else float("nan"),
            "map": mean_ap,
            "per_class_f1": [float(v) for v in per_f1],
            "images": int(target.shape[0]),
        }


def metrics_for(task: str, num_classes: int):
    if task == "multilabel":
        return MultilabelMetrics(num_classes)
    return SegmentationMetrics(num_classes)
