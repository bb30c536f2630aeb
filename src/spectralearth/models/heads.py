"""A trained downstream model: encoder + fixed feature standardisation + head, saved as a folder.

The evaluation protocols (``spectralearth.downstream.protocols``) train a head (and, by
protocol, part of the encoder) on standardised features ``(f - feature_mean) /
feature_std``; :class:`SegmentationModel` holds those pieces so the same model can map a
whole scene (``spectralearth.predict``). A saved model is a folder::

    head.json          kind, task, backbone, in_chans, num_classes, classes, band statistics
                       the inputs were normalised with, and where it came from (model,
                       dataset, protocol, seed, label fraction)
    model.safetensors  every weight: ``encoder.*``, ``head.*``, ``feature_mean``, ``feature_std``

Weights are read with safetensors only (no pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HEAD_FILE = "head.json"
WEIGHTS_FILE = "model.safetensors"
KIND = "spectralearth-downstream-model"
SEGMENTATION = "segmentation"
MULTILABEL = "multilabel"


def make_head(num_features: int, num_classes: int, task: str) -> nn.Module:
    """A 1x1 convolution per pixel (segmentation) or a linear layer on pooled features."""
    if task == MULTILABEL:
        return nn.Linear(num_features, num_classes)
    return nn.Conv2d(num_features, num_classes, kernel_size=1)


class SegmentationModel(nn.Module):
    """``forward(x)``: normalised image ``[B, C, H, W]`` -> logits ``[B, K, H, W]`` (segmentation:
    the head runs on the feature map and its logits are bilinearly upsampled to ``H x W``) or
    ``[B, K]`` (multi-label: the head runs on the globally averaged feature map)."""

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        task: str = SEGMENTATION,
    ) -> None:
        super().__init__()
        if task not in (SEGMENTATION, MULTILABEL):
            raise ValueError(f"unknown task {task!r}")
        self.encoder = encoder
        self.head = head
        self.task = task
        c = int(feature_mean.numel())
        self.register_buffer("feature_mean", feature_mean.detach().reshape(1, c, 1, 1).clone())
        self.register_buffer("feature_std", feature_std.detach().reshape(1, c, 1, 1).clone())

    @property
    def num_classes(self) -> int:
        return int(self.head.out_channels if self.task == SEGMENTATION else self.head.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = (self.encoder.forward_features(x) - self.feature_mean) / self.feature_std
        if self.task == MULTILABEL:
            return self.head(f.mean(dim=(2, 3)))
        return F.interpolate(self.head(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


def save_model(model: SegmentationModel, folder: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write ``model`` to ``folder`` (``head.json`` + ``model.safetensors``, each atomically).

    ``info`` must name ``backbone`` and ``classes`` and carry ``band_stats`` (``mean``/``std``
    the inputs were normalised with); anything else (model, dataset, protocol, seed, ...)
    is recorded as given.
    """
    from safetensors.torch import save_file

    from spectralearth.io import atomic_path, atomic_write_text

    for key in ("backbone", "classes", "band_stats"):
        if key not in info:
            raise ValueError(f"save_model: info needs {key!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    head = {
        "kind": KIND,
        "task": model.task,
        "in_chans": int(getattr(model.encoder, "in_chans", len(info["band_stats"]["mean"]))),
        "num_features": int(model.feature_mean.shape[1]),
        "num_classes": model.num_classes,
        **info,
        "band_stats": {
            "mean": [float(v) for v in info["band_stats"]["mean"]],
            "std": [float(v) for v in info["band_stats"]["std"]],
        },
    }
    atomic_write_text(folder / HEAD_FILE, json.dumps(head, indent=1, default=str))
    return folder


def is_model_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    folder = path.parent if path.is_file() else path
    return (folder / HEAD_FILE).is_file()


def load_model(path: str | os.PathLike) -> tuple[SegmentationModel, dict[str, Any]]:
    """A folder written by :func:`save_model` (or its ``model.safetensors``) -> ``(model in
    eval mode, head.json contents)``. A pretrained encoder without a trained head is refused
    with a message saying where heads come from."""
    from safetensors.torch import load_file

    from spectralearth.models.registry import create_model

    path = Path(path)
    folder = path.parent if path.is_file() else path
    head_file = folder / HEAD_FILE
    if not head_file.is_file():
        hint = (
            " (a pretrained encoder without a trained head: `spectralearth evaluate` trains "
            "heads and saves them under <data>/results/heads/)"
            if (folder / "run.json").is_file()
            else ""
        )
        raise FileNotFoundError(
            f"{folder}: not a trained downstream model, {HEAD_FILE} missing{hint}"
        )
    info = json.loads(head_file.read_text())
    if info.get("kind") != KIND:
        raise ValueError(f"{head_file}: kind {info.get('kind')!r} is not {KIND!r}")
    encoder = create_model(info["backbone"], in_chans=int(info["in_chans"]))
    head = make_head(int(info["num_features"]), int(info["num_classes"]), info["task"])
    c = int(info["num_features"])
    model = SegmentationModel(encoder, head, torch.zeros(c), torch.ones(c), info["task"])
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    return model.eval(), info
