"""Downstream evaluation protocols: how much of the encoder trains, and a per-pixel head.

* ``frozen`` (default; SpectralEarth's "linear probing"): the encoder runs once per image in
  eval mode without gradients and its spatial feature map ``forward_features(x) ->
  [B, C, h, w]`` is cached. The head is a 1x1 convolution applied to the feature map
  bilinearly upsampled to the input size, trained with cross-entropy (``ignore_index=-1``)
  and Adam. Since bilinear upsampling is a convex combination of neighbours and a 1x1
  convolution is affine, ``conv(upsample(f)) == upsample(conv(f))``: the head is computed at
  feature resolution and its K logits are upsampled, which gives the same model at a
  fraction of the cost. Features are standardised per channel with train-set statistics
  first (a fixed affine map, so the head stays a linear probe; it only makes Adam's step
  size independent of the encoder's feature scale).
* ``adapter``: the spectral adapter and the head train, the rest of the encoder is frozen.
* ``first-n``: the first ``first_n`` stages of the encoder (see :func:`encoder_stages`: the
  spectral adapter, then the ResNet stages or the ViT patch embedding and blocks) train.
* ``full``: every encoder parameter trains (at ``ENCODER_LR_SCALE`` x the head's rate).

The three fine-tuning protocols train on a deep copy: the caller's encoder is never changed.
Frozen modules stay in eval mode (their BatchNorm statistics do not move).

Heads (``head``; :mod:`spectralearth.models.heads`): ``linear`` (above, the default: cheap
enough for a CPU), ``fcn`` (the FCN head on the Spec-ResNet dilated to output stride 1),
``upconv`` (an upsampling conv head on ViT patch tokens) or ``paper`` (FCN for ResNets,
upconv for ViTs, as the SpectralEarth paper evaluates). A dense head is not a linear map, so
under ``frozen`` its features are not cached: the frozen encoder runs without gradients on
every batch (an output-stride-1 ResNet-50 feature map is 2048 x H x W per image, too big
to keep for a whole dataset), through the same loop as the fine-tuning protocols.

Multi-label tasks (CORINE) use a linear head on the globally averaged feature map, trained
with binary cross-entropy. With ``val_ds`` the head (and encoder) of the epoch with the best
validation score (``macro_iou``, or ``map`` for multi-label) is the one scored on
``test_ds``; without it, the last epoch's.
"""

from __future__ import annotations

import copy
import math
import resource
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from spectralearth.config import EvaluateSettings
from spectralearth.downstream.metrics import metrics_for
from spectralearth.names import PROTOCOLS

IGNORE_INDEX = -1
SEGMENTATION = "segmentation"
MULTILABEL = "multilabel"
ENCODER_LR_SCALE = 0.1
DEFAULT_FIRST_N = 2
SELECTION_METRIC = {SEGMENTATION: "macro_iou", MULTILABEL: "map"}


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (``getrusage`` maxrss) in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes vs KB


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def label_subset(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """A seeded random ``fraction`` of ``dataset``'s images (at least one); 1.0 = all of it."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must lie in (0, 1], got {fraction}")
    n = len(dataset)
    if fraction >= 1 or n == 0:
        return dataset
    k = max(1, math.ceil(fraction * n))
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:k])
    return Subset(dataset, idx.tolist())


def encoder_stages(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's stages from input to output, the unit of the ``first-n`` protocol."""
    stages: list[nn.Module] = []
    if getattr(encoder, "spectral_adapter", None) is not None:
        stages.append(encoder.spectral_adapter)
    if hasattr(encoder, "resnet"):
        stages += [getattr(encoder.resnet, f"layer{i}") for i in range(1, 5)]
    elif hasattr(encoder, "vit_core"):
        core = encoder.vit_core
        stages += [core.patch_embed, *core.blocks, core.norm]
    else:
        stages += [m for m in encoder.children() if m not in stages]
    return stages


def _set_trainable(encoder: nn.Module, protocol: str, first_n: int) -> list[nn.Module]:
    """Freeze ``encoder`` except what ``protocol`` trains; returns the trainable modules."""
    if protocol == "frozen":
        trainable = []
    elif protocol == "full":
        trainable = [encoder]
    elif protocol == "adapter":
        adapter = getattr(encoder, "spectral_adapter", None)
        if adapter is None:
            raise ValueError("protocol 'adapter' needs an encoder with a spectral adapter")
        trainable = [adapter]
    else:
        stages = encoder_stages(encoder)
        if not 1 <= first_n <= len(stages):
            raise ValueError(f"first_n must lie in 1..{len(stages)}, got {first_n}")
        trainable = stages[:first_n]
    encoder.requires_grad_(False)
    encoder.eval()
    for m in trainable:
        m.requires_grad_(True)
        m.train()
    if protocol == "full":
        # timm ViTs keep cls_token / pos_embed as parameters of the encoder root
        encoder.requires_grad_(True)
    return trainable


@torch.no_grad()
def extract_features(
    encoder: nn.Module, dataset: Dataset, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen encoder once over ``dataset``: features ``[N, C, h, w]`` (CPU, float32)
    and targets (masks ``[N, H, W]`` int16 with -1 = ignore, or multi-hot ``[N, K]``)."""
    device = _device_of(encoder)
    feats, targets = [], []
    for images, target in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        f = encoder.forward_features(images.to(device))
        if f.ndim != 4:
            raise ValueError(f"forward_features must return [B, C, h, w], got {tuple(f.shape)}")
        feats.append(f.float().cpu())
        targets.append(target.to(torch.int16) if target.ndim == 3 else target.float())
    if not feats:
        raise ValueError("empty dataset")
    return torch.cat(feats), torch.cat(targets)


def _loss(out: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor | None:
    if task == MULTILABEL:
        return F.binary_cross_entropy_with_logits(out, target.float())
    if not (target != IGNORE_INDEX).any():
        return None  # no labelled pixel: the mean loss is undefined
    return F.cross_entropy(out, target.long(), ignore_index=IGNORE_INDEX)


def _head_logits(head: nn.Module, f: torch.Tensor, target: torch.Tensor, task: str):
    if task == MULTILABEL:
        return head(f.mean(dim=(2, 3)))
    return F.interpolate(
        head(f), size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False
    )


def _make_head(
    num_features: int, num_classes: int, task: str, head: str = "linear", patch_size: int = 0
) -> nn.Module:
    from spectralearth.models.heads import make_head

    return make_head(num_features, num_classes, task, head, patch_size)


def _trained_model(encoder: nn.Module, head: nn.Module, mu, sd, task: str) -> nn.Module:
    from spectralearth.models.heads import SegmentationModel

    return SegmentationModel(encoder, head, mu.flatten(), sd.flatten(), task)


def evaluate_encoder(
    encoder: nn.Module,
    train_ds: Dataset,
    test_ds: Dataset,
    num_classes: int,
    settings: EvaluateSettings,
    protocol: str = "frozen",
    *,
    val_ds: Dataset | None = None,
    task: str = SEGMENTATION,
    first_n: int = DEFAULT_FIRST_N,
    keep_model: bool = False,
    head: str = "linear",
) -> dict[str, Any]:
    """Train a head (and, by ``protocol``, part of the encoder) on ``train_ds``; score ``test_ds``.

    ``head`` is a kind of :mod:`spectralearth.models.heads` (``linear``, ``fcn``, ``upconv``
    or ``paper``); the caller's encoder is never changed (a dense head runs on a copy,
    dilated for ``fcn``).
    Uses ``settings.epochs``, ``settings.batch_size``, ``settings.lr`` (Adam) and
    ``settings.seed`` (head init and batch order; the global RNG state is left unchanged).
    Returns the metrics of :mod:`spectralearth.downstream.metrics` for ``test_ds`` (and, with
    ``val_ds``, the best epoch's under ``"val"``), ``best_epoch``, the training loss per
    epoch, image and pixel counts, timings (``seconds`` = all of it) and ``peak_mem_mb``.
    With ``keep_model`` the trained model (encoder + feature standardisation + head, a
    :class:`spectralearth.models.heads.SegmentationModel`; under ``frozen`` it shares the
    caller's encoder) is under ``"model"``: pop it before keeping the result around.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; have {PROTOCOLS}")
    if task not in (SEGMENTATION, MULTILABEL):
        raise ValueError(f"unknown task {task!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    from spectralearth.models.heads import LINEAR, resolve_head

    head = resolve_head(head, encoder, task)
    if protocol == "frozen" and head == LINEAR:
        result = _evaluate_frozen(encoder, train_ds, test_ds, val_ds, num_classes, settings, task)
    else:
        result = _evaluate_finetune(
            encoder, train_ds, test_ds, val_ds, num_classes, settings, task, protocol, first_n,
            head,
        )  # fmt: skip
    result["head"] = head
    if not keep_model:
        result.pop("model")
    return result


def _check_labels(target: torch.Tensor, num_classes: int, task: str) -> None:
    if task == SEGMENTATION and target.numel() and int(target.max()) >= num_classes:
        raise ValueError(f"labels exceed num_classes={num_classes}")
    if task == MULTILABEL and target.shape[-1] != num_classes:
        raise ValueError(f"multi-label targets have {target.shape[-1]} classes, not {num_classes}")


def _counts(prefix: str, target: torch.Tensor, task: str) -> dict[str, int]:
    out = {f"{prefix}_images": int(target.shape[0])}
    if task == SEGMENTATION:
        out[f"{prefix}_pixels"] = int((target != IGNORE_INDEX).sum())
    return out


def _evaluate_frozen(encoder, train_ds, test_ds, val_ds, num_classes, settings, task):
    t0 = time.perf_counter()
    was_training = encoder.training
    encoder.eval()
    try:
        train_f, train_m = extract_features(encoder, train_ds, settings.batch_size)
        test_f, test_m = extract_features(encoder, test_ds, settings.batch_size)
        val = extract_features(encoder, val_ds, settings.batch_size) if val_ds else None
    finally:
        encoder.train(was_training)
    t_feat = time.perf_counter() - t0
    for m in (train_m, test_m) + ((val[1],) if val else ()):
        _check_labels(m, num_classes, task)

    # Per-channel standardisation with train statistics (a fixed affine map).
    mu = train_f.mean(dim=(0, 2, 3), keepdim=True)
    sd = train_f.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    num_features = train_f.shape[1]
    device = _device_of(encoder)

    def score(head: nn.Module, feats: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        metrics = metrics_for(task, num_classes)
        head.eval()
        with torch.no_grad():
            for s in range(0, feats.shape[0], settings.batch_size):
                target = targets[s : s + settings.batch_size]
                f = ((feats[s : s + settings.batch_size] - mu) / sd).to(device)
                metrics.update(_head_logits(head, f, target, task).cpu(), target)
        head.train()
        return metrics.compute()

    t1 = time.perf_counter()
    losses: list[float] = []
    best: tuple[float, int, dict, dict] | None = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        head = _make_head(num_features, num_classes, task).to(device)
        gen = torch.Generator().manual_seed(settings.seed)
        opt = torch.optim.Adam(head.parameters(), lr=settings.lr)
        n = train_f.shape[0]
        for epoch in range(settings.epochs):
            order = torch.randperm(n, generator=gen)
            total, count = 0.0, 0
            for start in range(0, n, settings.batch_size):
                idx = order[start : start + settings.batch_size]
                target = train_m[idx].to(device)
                f = ((train_f[idx] - mu) / sd).to(device)
                loss = _loss(_head_logits(head, f, target, task), target, task)
                if loss is None:
                    continue
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
            losses.append(total / max(count, 1))
            if val is not None:
                res = score(head, *val)
                key = res[SELECTION_METRIC[task]]
                if best is None or (not math.isnan(key) and (math.isnan(best[0]) or key > best[0])):
                    best = (key, epoch, copy.deepcopy(head.state_dict()), res)
    if best is not None:
        head.load_state_dict(best[2])
    t_train = time.perf_counter() - t1

    t2 = time.perf_counter()
    result = score(head, test_f, test_m)
    t_test = time.perf_counter() - t2
    result.update(
        protocol="frozen",
        task=task,
        num_classes=num_classes,
        num_features=num_features,
        feature_size=list(train_f.shape[-2:]),
        epochs=settings.epochs,
        best_epoch=best[1] if best else settings.epochs - 1,
        train_loss=losses,
        feature_seconds=t_feat,
        train_seconds=t_train,
        test_seconds=t_test,
        seconds=time.perf_counter() - t0,
        peak_mem_mb=peak_memory_mb(),
        **_counts("train", train_m, task),
        **_counts("test", test_m, task),
    )
    if best is not None:
        result["val"] = best[3]
    result["model"] = _trained_model(encoder, head, mu, sd, task)
    return result


def _evaluate_finetune(
    encoder, train_ds, test_ds, val_ds, num_classes, settings, task, protocol, first_n, head_kind
):
    from spectralearth.models.heads import prepare_encoder

    t0 = time.perf_counter()
    device = _device_of(encoder)
    bs = settings.batch_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = prepare_encoder(copy.deepcopy(encoder), head_kind)
        _set_trainable(model, protocol, first_n)
        train_modes = {id(m): m.training for m in model.modules()}
        # Fixed per-channel standardisation of the initial features (as for `frozen`).
        model.eval()
        with torch.no_grad():
            firsts = []
            for i, (images, _) in enumerate(DataLoader(train_ds, batch_size=bs)):
                firsts.append(model.forward_features(images.to(device)).float())
                if i >= 3:
                    break
            f0 = torch.cat(firsts)
        mu = f0.mean(dim=(0, 2, 3), keepdim=True)
        sd = f0.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        num_features = f0.shape[1]
        patch = int(getattr(model, "patch_size", 0) or 0)
        head = _make_head(num_features, num_classes, task, head_kind, patch).to(device)
        enc_params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": list(head.parameters()), "lr": settings.lr}]
        if enc_params:  # none under `frozen` (a dense head on the frozen encoder)
            groups.append({"params": enc_params, "lr": settings.lr * ENCODER_LR_SCALE})
        opt = torch.optim.Adam(groups)
        gen = torch.Generator().manual_seed(settings.seed)

        def set_train(flag: bool) -> None:
            for m in model.modules():
                m.train(flag and train_modes[id(m)])
            head.train(flag)

        def forward(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            f = (model.forward_features(images.to(device)) - mu) / sd
            return _head_logits(head, f, target, task)

        def score(ds: Dataset) -> tuple[dict[str, Any], torch.Tensor]:
            set_train(False)
            metrics = metrics_for(task, num_classes)
            targets = []
            with torch.no_grad():
                for images, target in DataLoader(ds, batch_size=bs):
                    _check_labels(target, num_classes, task)
                    metrics.update(forward(images, target).cpu(), target)
                    targets.append(target)
            set_train(True)
            return metrics.compute(), torch.cat(targets)

        losses: list[float] = []
        best = None
        t1 = time.perf_counter()
        train_targets = []
        set_train(True)
        for epoch in range(settings.epochs):
            total, count = 0.0, 0
            loader = DataLoader(train_ds, batch_size=bs, shuffle=True, generator=gen)
            for images, target in loader:
                if epoch == 0:
                    _check_labels(target, num_classes, task)
                    train_targets.append(target)
                loss = _loss(forward(images, target.to(device)), target.to(device), task)
                if loss is None:
                    continue
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(images)
                count += len(images)
            losses.append(total / max(count, 1))
            if val_ds is not None:
                res, _ = score(val_ds)
                key = res[SELECTION_METRIC[task]]
                if best is None or (not math.isnan(key) and (math.isnan(best[0]) or key > best[0])):
                    best = (
                        key,
                        epoch,
                        copy.deepcopy(head.state_dict()),
                        # a frozen encoder (dense head under `frozen`) never changes: no copy
                        copy.deepcopy(model.state_dict()) if enc_params else None,
                        res,
                    )
        if best is not None:
            head.load_state_dict(best[2])
            if best[3] is not None:
                model.load_state_dict(best[3])
        t_train = time.perf_counter() - t1
        t2 = time.perf_counter()
        result, test_targets = score(test_ds)
        t_test = time.perf_counter() - t2
    result.update(
        protocol=protocol,
        task=task,
        num_classes=num_classes,
        num_features=num_features,
        feature_size=list(f0.shape[-2:]),
        epochs=settings.epochs,
        best_epoch=best[1] if best else settings.epochs - 1,
        train_loss=losses,
        trainable_encoder_params=sum(p.numel() for p in enc_params),
        train_seconds=t_train,
        test_seconds=t_test,
        seconds=time.perf_counter() - t0,
        peak_mem_mb=peak_memory_mb(),
        **(_counts("train", torch.cat(train_targets), task) if train_targets else {}),
        **_counts("test", test_targets, task),
    )
    if protocol == "first-n":
        result["first_n"] = first_n
    if best is not None:
        result["val"] = best[4]
    result["model"] = _trained_model(model, head, mu, sd, task)
    return result
