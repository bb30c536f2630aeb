"""A trained downstream model: encoder + fixed feature standardisation + head, saved as a folder.

Heads (:func:`make_head`): ``linear`` (a 1x1 convolution per pixel for segmentation, the
cheap probe; a linear layer on the pooled embedding for multi-label and regression),
``fcn`` (:class:`FCNHead` on the dilated Spec-ResNet, output stride 1), ``upconv``
(:class:`UpConvHead` on ViT patch tokens) and ``mlp`` (:class:`MLPHead`, the reference's
regression head on the pooled embedding); ``paper`` picks the SpectralEarth reference code's
head for the encoder and task (:func:`resolve_head`).

Pooled tasks (multi-label, regression) read the encoder's embedding the way the reference
does: a Spec-ViT's class token, the global average of any other encoder's feature map
(:func:`pooling_for`).

The evaluation protocols (``spectralearth.downstream.protocols``) train a head (and, by
protocol, part of the encoder) on standardised features ``(f - feature_mean) /
feature_std`` (the identity where the recipe does not standardise); :class:`DownstreamModel`
holds those pieces so the same model can map a whole scene (``spectralearth.predict``). A
saved model is a folder::

    head.json          kind, task, head (linear, fcn, upconv, mlp), pool, dilated, backbone,
                       in_chans, num_classes, classes (regression: target names), band
                       statistics the inputs were normalised with, and where it came from
                       (model, dataset, protocol, recipe, seed, label fraction)
    model.safetensors  every weight: ``encoder.*``, ``head.*``, ``feature_mean``, ``feature_std``

Weights are read with safetensors only (no pickle).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spectralearth.names import HEADS

HEAD_FILE = "head.json"
WEIGHTS_FILE = "model.safetensors"
KIND = "spectralearth-downstream-model"
SEGMENTATION = "segmentation"
MULTILABEL = "multilabel"
REGRESSION = "regression"
TASKS = (SEGMENTATION, MULTILABEL, REGRESSION)
MEAN, TOKEN = "mean", "token"  # how a pooled task reads the encoder (pooling_for)


LINEAR, FCN, UPCONV, MLP, PAPER = HEADS


class FCNHead(nn.Sequential):
    """FCN head (Long et al. 2015; torchvision's ``FCNHead``): 3x3 conv to C/8 channels, BN,
    ReLU, 1x1 conv to the classes. The SpectralEarth paper's head on the dilated
    Spec-ResNet-50 (output stride 1, so its logits are already at pixel resolution)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter = max(in_channels // 8, 1)
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Conv2d(inter, num_classes, 1),
        )
        self.out_channels = num_classes


class UpConvHead(nn.Sequential):
    """Upsampling conv head on ViT patch tokens: ``log2(patch_size)`` times (x2 bilinear
    upsampling, 3x3 conv), 128, 64, ... channels with BN and ReLU between, the last conv to
    the classes: a 4 x 4 patch grid comes back to pixel resolution in two steps. The head of
    the SpectralEarth reference code for its Spec-ViTs."""

    def __init__(self, in_channels: int, num_classes: int, patch_size: int) -> None:
        steps = int(math.log2(patch_size)) if patch_size > 0 else -1
        if steps < 1 or 2**steps != patch_size:
            raise ValueError(f"UpConvHead needs a power-of-2 patch size >= 2, got {patch_size}")
        widths = [128 // 2**i for i in range(steps - 1)] + [num_classes]
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(widths):
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(cin, cout, 3, padding=1),
            ]
            if i < steps - 1:
                layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        super().__init__(*layers)
        self.out_channels = num_classes
        self.patch_size = patch_size


class MLPHead(nn.Sequential):
    """The SpectralEarth reference code's regression head on the pooled embedding:
    BatchNorm1d, then per hidden width a Linear, ReLU and Dropout(0.2), and a Linear to the
    outputs (hidden widths 2048, 1024 as its HYPERVIEW config)."""

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        hidden: tuple[int, ...] = (2048, 1024),
        dropout: float = 0.2,
    ) -> None:
        layers: list[nn.Module] = [nn.BatchNorm1d(in_features)]
        widths = [in_features, *hidden]
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(cin, cout), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(widths[-1], num_outputs))
        super().__init__(*layers)
        self.out_features = num_outputs


def pooling_for(encoder: nn.Module) -> str:
    """How a pooled task (multi-label, regression) reads ``encoder``: ``token`` (its pooled
    output, the class token) for a ViT, ``mean`` (the global average of its feature map)
    for any other encoder, as the reference code's classifiers do."""
    from spectralearth.models.vit import ViTEncoder

    return TOKEN if isinstance(encoder, ViTEncoder) else MEAN


def resolve_head(head: str, encoder: nn.Module, task: str) -> str:
    """The head kind ``head`` means for ``encoder`` and ``task``: ``paper`` picks the
    reference's (segmentation: FCN on a Spec-ResNet, upconv on a ViT; multi-label: linear;
    regression: MLP); multi-label tasks always use the linear head on the pooled embedding.
    A head the encoder or task cannot carry is refused, saying why."""
    from spectralearth.models.resnet import SpecResNet

    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; have {HEADS}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if task == MULTILABEL or head == LINEAR:
        return LINEAR
    if task == REGRESSION:
        if head in (MLP, PAPER):
            return MLP
        raise ValueError(f"head {head!r} is a segmentation head; regression takes linear or mlp")
    if head == MLP:
        raise ValueError(
            "head 'mlp' is the regression head; segmentation takes linear, fcn, upconv"
        )
    is_resnet, patch = isinstance(encoder, SpecResNet), getattr(encoder, "patch_size", None)
    if head == PAPER:
        if is_resnet:
            return FCN
        if patch:
            return UPCONV
        return LINEAR
    if head == FCN and not is_resnet:
        raise ValueError(f"head 'fcn' runs on a dilated Spec-ResNet, not {type(encoder).__name__}")
    if head == UPCONV and not patch:
        raise ValueError(f"head 'upconv' runs on ViT patch tokens, not {type(encoder).__name__}")
    return head


def prepare_encoder(encoder: nn.Module, head: str) -> nn.Module:
    """The encoder the (resolved) head runs on: dilated in place for ``fcn``."""
    if head == FCN:
        from spectralearth.models.resnet import dilate

        dilate(encoder)
    return encoder


def make_head(
    num_features: int, num_classes: int, task: str, kind: str = LINEAR, patch_size: int = 0
) -> nn.Module:
    """The head: ``linear`` a 1x1 convolution per pixel (segmentation) or a linear layer on
    the pooled embedding (multi-label, regression); ``fcn`` :class:`FCNHead`; ``upconv``
    :class:`UpConvHead` (needs the encoder's ``patch_size``); ``mlp`` :class:`MLPHead`."""
    if task in (MULTILABEL, REGRESSION) and kind == MLP:
        return MLPHead(num_features, num_classes)
    if task in (MULTILABEL, REGRESSION) or kind == LINEAR:
        if task != SEGMENTATION:
            return nn.Linear(num_features, num_classes)
        return nn.Conv2d(num_features, num_classes, kernel_size=1)
    if kind == FCN:
        return FCNHead(num_features, num_classes)
    if kind == UPCONV:
        return UpConvHead(num_features, num_classes, patch_size)
    raise ValueError(f"unknown head kind {kind!r}")


def apply_head(
    head: nn.Module,
    features: torch.Tensor,
    feature_mean: torch.Tensor,
    feature_std: torch.Tensor,
    task: str,
    pool: str = MEAN,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Standardise encoder ``features`` and run ``head`` on them.

    Segmentation: ``features`` ``[B, C, h, w]``, logits bilinearly upsampled to ``size``.
    Pooled tasks: ``pool="mean"`` averages the standardised ``[B, C, h, w]`` map (the
    standardisation is per pixel, as a linear probe on the map sees it); ``pool="token"``
    takes the pooled embedding ``[B, C]`` (standardised with the same ``[1, C, 1, 1]``
    statistics)."""
    if task == SEGMENTATION:
        logits = head((features - feature_mean) / feature_std)
        size = size or tuple(features.shape[-2:])
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    if pool == TOKEN:
        return head((features - feature_mean.flatten()) / feature_std.flatten())
    return head(((features - feature_mean) / feature_std).mean(dim=(2, 3)))


class DownstreamModel(nn.Module):
    """``forward(x)``: normalised image ``[B, C, H, W]`` -> logits ``[B, K, H, W]``
    (segmentation: the head runs on the feature map and its logits are bilinearly upsampled
    to ``H x W``) or ``[B, K]`` (multi-label logits, regression outputs: the head runs on
    the pooled embedding, see :func:`pooling_for`)."""

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        task: str = SEGMENTATION,
        pool: str = MEAN,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        if pool not in (MEAN, TOKEN):
            raise ValueError(f"unknown pooling {pool!r}")
        self.encoder = encoder
        self.head = head
        self.task = task
        self.pool = pool
        c = int(feature_mean.numel())
        self.register_buffer("feature_mean", feature_mean.detach().reshape(1, c, 1, 1).clone())
        self.register_buffer("feature_std", feature_std.detach().reshape(1, c, 1, 1).clone())

    @property
    def num_classes(self) -> int:
        return int(self.head.out_channels if self.task == SEGMENTATION else self.head.out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads, before standardisation: the feature map, or (``token``) the
        encoder's pooled embedding."""
        if self.task != SEGMENTATION and self.pool == TOKEN:
            return self.encoder(x)
        return self.encoder.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_head(
            self.head, self.features(x), self.feature_mean, self.feature_std, self.task,
            self.pool, tuple(x.shape[-2:]),
        )  # fmt: skip


# The name of DownstreamModel when it served segmentation and multi-label tasks only.
SegmentationModel = DownstreamModel


def head_kind(head: nn.Module) -> str:
    """The kind a head module is (what head.json records)."""
    if isinstance(head, FCNHead):
        return FCN
    if isinstance(head, UpConvHead):
        return UPCONV
    if isinstance(head, MLPHead):
        return MLP
    return LINEAR


def save_model(model: DownstreamModel, folder: str | os.PathLike, info: dict[str, Any]) -> Path:
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
    bands = len(info["band_stats"]["mean"])
    encoder_bands = int(getattr(model.encoder, "in_chans", bands))
    head = {
        "kind": KIND,
        "task": model.task,
        "in_chans": bands,  # what the saved model takes (the adapter takes any band count)
        "num_features": int(model.feature_mean.shape[1]),
        "num_classes": model.num_classes,
        "head": head_kind(model.head),
        "pool": model.pool,
        "dilated": bool(getattr(model.encoder, "dilated", False)),
        **({"pretrained_in_chans": encoder_bands} if encoder_bands != bands else {}),
        **info,
        "band_stats": {
            "mean": [float(v) for v in info["band_stats"]["mean"]],
            "std": [float(v) for v in info["band_stats"]["std"]],
        },
    }
    atomic_write_text(folder / HEAD_FILE, json.dumps(head, indent=1, default=str))
    return folder


def load_model(path: str | os.PathLike) -> tuple[DownstreamModel, dict[str, Any]]:
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
    kind = info.get("head", LINEAR)  # folders saved before dense heads existed: linear
    if info.get("dilated"):
        prepare_encoder(encoder, FCN)
    head = make_head(
        int(info["num_features"]),
        int(info["num_classes"]),
        info["task"],
        kind,
        int(getattr(encoder, "patch_size", 0) or 0),
    )
    c = int(info["num_features"])
    pool = info.get("pool", MEAN)  # folders saved before pooling was recorded: the mean
    model = DownstreamModel(encoder, head, torch.zeros(c), torch.ones(c), info["task"], pool)
    state = load_file(str(folder / WEIGHTS_FILE))
    # folders saved before the reference key layout (``encoder.vit.*``) are migrated by the
    # encoder's own load hook (spectralearth.models.vit.migrate_legacy_keys), with a log line
    model.load_state_dict(state, strict=True)
    return model.eval(), info
