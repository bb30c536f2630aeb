"""Downstream evaluation protocols: a frozen encoder with a trained per-pixel linear head.

``frozen`` (the only protocol so far; SpectralEarth's "linear probing" for segmentation):
the encoder runs once per image in eval mode without gradients and its spatial feature map
``forward_features(x) -> [B, C, h, w]`` is cached. The head is a 1x1 convolution applied to
the feature map bilinearly upsampled to the input size, trained with cross-entropy
(``ignore_index=-1``) and Adam. Since bilinear upsampling is a convex combination of
neighbours and a 1x1 convolution is affine, ``conv(upsample(f)) == upsample(conv(f))``: the
head is computed at feature resolution and its K logits are upsampled, which gives the same
model at a fraction of the cost. Features are standardised per channel with train-set
statistics first (a fixed affine map, so the head stays a linear probe; it only makes Adam's
step size independent of the encoder's feature scale).
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from spectralearth.config import EvaluateSettings

IGNORE_INDEX = -1
PROTOCOLS = ("frozen",)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (``getrusage`` maxrss) in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes vs KB


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def extract_features(
    encoder: nn.Module, dataset: Dataset, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen encoder once over ``dataset``: features ``[N, C, h, w]`` (CPU, float32)
    and masks ``[N, H, W]`` (CPU, int16; -1 = ignore)."""
    device = _device_of(encoder)
    feats, masks = [], []
    for images, target in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        f = encoder.forward_features(images.to(device))
        if f.ndim != 4:
            raise ValueError(f"forward_features must return [B, C, h, w], got {tuple(f.shape)}")
        feats.append(f.float().cpu())
        masks.append(target.to(torch.int16))
    if not feats:
        raise ValueError("empty dataset")
    return torch.cat(feats), torch.cat(masks)


def evaluate_encoder(
    encoder: nn.Module,
    train_ds: Dataset,
    test_ds: Dataset,
    num_classes: int,
    settings: EvaluateSettings,
    protocol: str = "frozen",
) -> dict[str, Any]:
    """Train a head on ``train_ds`` features of the frozen ``encoder``; report on ``test_ds``.

    Uses ``settings.epochs``, ``settings.batch_size``, ``settings.lr`` (Adam) and
    ``settings.seed`` (head init and batch order; the global RNG state is left unchanged).
    Returns ``overall_accuracy`` (micro), ``macro_f1``, ``per_class_f1``,
    ``confusion_matrix`` (rows = truth, cols = prediction), pixel and image counts,
    timings (``seconds`` = features + training + test) and ``peak_mem_mb``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; have {PROTOCOLS}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    t0 = time.perf_counter()
    was_training = encoder.training
    encoder.eval()
    try:
        train_f, train_m = extract_features(encoder, train_ds, settings.batch_size)
        test_f, test_m = extract_features(encoder, test_ds, settings.batch_size)
    finally:
        encoder.train(was_training)
    t_feat = time.perf_counter() - t0
    if int(train_m.max()) >= num_classes or int(test_m.max()) >= num_classes:
        raise ValueError(f"labels exceed num_classes={num_classes}")

    # Per-channel standardisation with train statistics (a fixed affine map).
    mu = train_f.mean(dim=(0, 2, 3), keepdim=True)
    sd = train_f.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    num_features = train_f.shape[1]
    device = _device_of(encoder)

    def logits(head: nn.Module, f: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = head(((f - mu) / sd).to(device))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)

    t1 = time.perf_counter()
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        head = nn.Conv2d(num_features, num_classes, kernel_size=1).to(device)
        gen = torch.Generator().manual_seed(settings.seed)
        opt = torch.optim.Adam(head.parameters(), lr=settings.lr)
        n = train_f.shape[0]
        for _ in range(settings.epochs):
            order = torch.randperm(n, generator=gen)
            total, count = 0.0, 0
            for start in range(0, n, settings.batch_size):
                idx = order[start : start + settings.batch_size]
                target = train_m[idx].long().to(device)
                if not (target != IGNORE_INDEX).any():
                    continue  # no labelled pixel: the mean loss is undefined
                out = logits(head, train_f[idx], tuple(target.shape[-2:]))
                loss = F.cross_entropy(out, target, ignore_index=IGNORE_INDEX)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
            losses.append(total / max(count, 1))
    t_train = time.perf_counter() - t1

    t2 = time.perf_counter()
    acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX)
    f1 = MulticlassF1Score(num_classes, average="macro", ignore_index=IGNORE_INDEX)
    f1_each = MulticlassF1Score(num_classes, average="none", ignore_index=IGNORE_INDEX)
    cm = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
    head.eval()
    with torch.no_grad():
        for start in range(0, test_f.shape[0], settings.batch_size):
            target = test_m[start : start + settings.batch_size].long()
            pred = logits(
                head, test_f[start : start + settings.batch_size], tuple(target.shape[-2:])
            )
            pred = pred.argmax(dim=1).cpu()
            for metric in (acc, f1, f1_each, cm):
                metric.update(pred, target)
    t_test = time.perf_counter() - t2

    return {
        "protocol": protocol,
        "overall_accuracy": float(acc.compute()),
        "macro_f1": float(f1.compute()),
        "per_class_f1": [float(v) for v in f1_each.compute()],
        "confusion_matrix": cm.compute().tolist(),
        "num_classes": num_classes,
        "num_features": num_features,
        "feature_size": list(train_f.shape[-2:]),
        "train_images": int(train_f.shape[0]),
        "test_images": int(test_f.shape[0]),
        "train_pixels": int((train_m != IGNORE_INDEX).sum()),
        "test_pixels": int((test_m != IGNORE_INDEX).sum()),
        "epochs": settings.epochs,
        "train_loss": losses,
        "feature_seconds": t_feat,
        "train_seconds": t_train,
        "test_seconds": t_test,
        "seconds": time.perf_counter() - t0,
        "peak_mem_mb": peak_memory_mb(),
    }
