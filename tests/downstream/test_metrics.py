"""The reference code's metrics beside the project's (micro/macro over all classes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from spectralearth.downstream.metrics import MultilabelMetrics, SegmentationMetrics, metric_names


def test_multilabel_reference_metrics_count_every_class():
    """CORINE: the reference averages over all 19 classes, a class without positives
    counting 0; the project's macro F1 and mAP leave such classes out."""
    rng = np.random.default_rng(0)
    k = 6
    target = (rng.random((40, k)) < 0.4).astype(int)
    target[:, 5] = 0  # a class nothing has
    scores = np.clip(target * 0.6 + rng.random((40, k)) * 0.5, 0, 1)
    m = MultilabelMetrics(k)
    logits = torch.logit(torch.from_numpy(scores).clamp(1e-6, 1 - 1e-6))
    m.update(logits[:25], torch.from_numpy(target[:25]))
    m.update(logits[25:], torch.from_numpy(target[25:]))
    res = m.compute()
    pred = (scores >= 0.5).astype(int)
    assert res["ref_micro_accuracy"] == pytest.approx((pred == target).mean())
    per_class_acc = [accuracy_score(target[:, c], pred[:, c]) for c in range(k)]
    assert res["ref_macro_accuracy"] == pytest.approx(np.mean(per_class_acc))
    assert res["ref_micro_f1"] == pytest.approx(f1_score(target, pred, average="micro"))
    per_f1 = f1_score(target, pred, average=None, zero_division=0)
    assert res["ref_macro_f1"] == pytest.approx(per_f1.mean())  # class 5 counts 0
    ap = [average_precision_score(target[:, c], scores[:, c]) for c in range(5)]
    assert res["ref_macro_ap"] == pytest.approx(np.sum(ap) / k, rel=1e-5)  # ... and 0 AP
    assert res["map"] == pytest.approx(np.mean(ap), rel=1e-5)  # the project's: 5 classes
    assert res["ref_micro_ap"] == pytest.approx(
        average_precision_score(target.ravel(), scores.ravel()), rel=1e-5
    )
    seen = (target.sum(0) > 0) | (pred.sum(0) > 0)
    assert res["macro_f1"] == pytest.approx(per_f1[seen].mean())
    assert res["images"] == 40 and set(metric_names("multilabel")) <= set(res)


def test_segmentation_metrics_run_on_the_inputs_device_and_reset():
    m = SegmentationMetrics(3)
    truth = torch.tensor([[[0, 1], [2, -1]]])
    m.update(torch.tensor([[[0, 1], [1, 2]]]), truth)
    first = m.compute()
    assert first["ref_overall_accuracy"] == first["overall_accuracy"] == pytest.approx(2 / 3)
    assert first["ref_micro_iou"] == first["micro_iou"]
    m.reset()
    m.update(truth.clamp(min=0), truth)
    assert m.compute()["overall_accuracy"] == 1.0
