"""Downstream evaluation protocols on Lightning: how much of the encoder trains, and the head.

Protocols (:mod:`~spectralearth.downstream.finetuning`, ``BaseFinetuning`` callbacks):

* ``frozen`` (SpectralEarth's "linear probing"): only the head trains.
* ``adapter``: the spectral adapter and the head train.
* ``first-n``: the first ``first_n`` encoder stages and the head train.
* ``full``: every encoder parameter trains.

How the head trains is the recipe's (:class:`~spectralearth.config.RecipeSettings`: head,
epochs, optimiser, schedule, augmentation, feature standardisation, epoch selection,
BatchNorm of frozen parts, how first-n counts). One training path serves every protocol:
:func:`fit_and_test` runs a task's LightningModule (:mod:`~spectralearth.downstream.tasks`)
with ``Trainer.fit``, picks the epoch with ``ModelCheckpoint`` (on ``val_<metric>``: macro
IoU, mAP or normalised MSE; or on ``val_loss``) when there is a val split, the last epoch
otherwise, and scores the test split with ``Trainer.test``. Accelerator, precision and data
workers come from :class:`~spectralearth.config.EvaluateSettings`.

**The cached-feature path** (``frozen`` + ``linear`` head + the recipe's ``cache_features``,
without augmentation; what makes CPU evaluation affordable): the frozen encoder runs once per
image in eval mode without gradients and its features are kept; the head trains on them.
Since bilinear upsampling is a convex combination of neighbours and a 1x1 convolution is
affine, ``conv(upsample(f)) == upsample(conv(f))``: the head runs at feature resolution and
its K logits are upsampled, the same model at a fraction of the cost. With
``standardise_features`` the features are standardised per channel with train statistics (a
fixed affine map, so the head stays a linear probe; it only makes the optimiser's step
independent of the encoder's feature scale).

Every other combination trains end to end on a deep copy of the encoder (the caller's is
never changed; dilated for ``fcn``). A dense head is not a linear map, so under ``frozen``
its features are not cached (an output-stride-1 ResNet-50 feature map is 2048 x H x W per
image); under the paper recipe the frozen encoder's BatchNorm runs in train mode, so its
features change with every batch and cannot be cached either.

Pooled tasks (multi-label, regression) read the class token of a ViT and the averaged
feature map of any other encoder (:func:`~spectralearth.models.heads.pooling_for`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from spectralearth.cards import MULTILABEL, REGRESSION, SEGMENTATION
from spectralearth.config import EvaluateSettings, RecipeSettings
from spectralearth.downstream.finetuning import (
    ProtocolFinetuning,
    encoder_stages,
    set_trainable,
    trainable_modules,
)
from spectralearth.downstream.metrics import IGNORE_INDEX, SELECTION_METRIC
from spectralearth.memory import PeakMemory
from spectralearth.names import PROTOCOLS

TASKS = (SEGMENTATION, MULTILABEL, REGRESSION)
DEFAULT_FIRST_N = 2
ENCODER_LR_SCALE = RecipeSettings().encoder_lr_scale  # the cpu recipe's

__all__ = [
    "DEFAULT_FIRST_N",
    "IGNORE_INDEX",
    "MULTILABEL",
    "PROTOCOLS",
    "REGRESSION",
    "SEGMENTATION",
    "Runtime",
    "encoder_stages",
    "evaluate_encoder",
    "extract_features",
    "fit_and_test",
    "label_subset",
    "set_trainable",
]


@dataclass(frozen=True)
class Runtime:
    """Where training runs: a Lightning accelerator (``cpu``/``gpu``; ``auto`` resolved),
    its precision and the data-loading processes."""

    accelerator: str = "cpu"
    precision: str = "32-true"
    num_workers: int = 0

    @classmethod
    def of(cls, settings: EvaluateSettings | None) -> Runtime:
        if settings is None:
            return cls()
        accelerator = settings.accelerator
        if accelerator == "auto":
            accelerator = "gpu" if torch.cuda.is_available() else "cpu"
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise RuntimeError(
                f"params.yaml [evaluate]: accelerator {settings.accelerator!r} but no CUDA "
                "device is visible (use auto or cpu)"
            )
        return cls(
            "gpu" if accelerator in ("gpu", "cuda") else "cpu",
            settings.precision,
            int(settings.num_workers),
        )

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.accelerator == "gpu" else "cpu")

    def autocast(self):
        """Autocast for code run outside Lightning (feature extraction) at this precision."""
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


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


class EpochPermutation(Sampler[int]):
    """A fresh ``torch.randperm(n, generator=...)`` every epoch (no other draw from it)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n = n
        self.generator = generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    batch_size: int,
    runtime: Runtime | None = None,
    pooled: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen encoder once over ``dataset``: features ``[N, C, h, w]`` (``pooled``:
    the encoder's pooled embeddings ``[N, C]``; CPU, float32) and targets (masks
    ``[N, H, W]`` int16 with -1 = ignore, multi-hot ``[N, K]`` or regression targets
    ``[N, K]``, float32). Runs on ``runtime``'s device (default: the encoder's); the encoder
    is back on its own device afterwards."""
    home = _device_of(encoder)
    device = runtime.device if runtime else home
    feats, targets = [], []
    encoder.to(device)
    try:
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=False,
            num_workers=runtime.num_workers if runtime else 0,
        )  # fmt: skip
        for images, target in loader:
            with runtime.autocast() if runtime else contextlib.nullcontext():
                images = images.to(device)
                f = encoder(images) if pooled else encoder.forward_features(images)
            want = 2 if pooled else 4
            if f.ndim != want:
                what = "forward" if pooled else "forward_features"
                raise ValueError(f"{what} must return a {want}-d tensor, got {tuple(f.shape)}")
            feats.append(f.float().cpu())
            targets.append(target.to(torch.int16) if target.ndim == 3 else target.float())
    finally:
        encoder.to(home)
    if not feats:
        raise ValueError("empty dataset")
    return torch.cat(feats), torch.cat(targets)


@contextlib.contextmanager
def _quiet():
    """Lightning's banners (GPU available ...) and data-loader hints off for library runs."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            from lightning.pytorch.utilities.warnings import PossibleUserWarning

            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            warnings.filterwarnings("ignore", message=".*modules? in eval mode.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
            yield
    finally:
        log.setLevel(level)


def fit_and_test(
    module,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    test_loader: DataLoader,
    recipe: RecipeSettings,
    runtime: Runtime,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train ``module`` (a :class:`~spectralearth.downstream.tasks.DownstreamTask`) for
    ``recipe.epochs``, restore the selected epoch, score the test split.

    The epoch: the best ``val_<metric>`` (the task's selection metric) or the lowest
    ``val_loss`` (``recipe.select``), chosen by Lightning's ``ModelCheckpoint`` (weights in a
    temporary folder, removed afterwards); early stopping on the same quantity where the
    recipe asks; the last epoch without a val split. Returns the test metrics with
    ``best_epoch``, ``val`` (the selected epoch's validation results, when there is a val
    split; with its loss per epoch under ``val_loss`` and the selection metric's under
    ``val_<metric>``) and ``train_seconds`` / ``test_seconds``.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    metric, mode = SELECTION_METRIC[module.task]
    monitor, mode = ("val_loss", "min") if recipe.select == "val_loss" else (f"val_{metric}", mode)
    with tempfile.TemporaryDirectory(prefix="spectralearth-eval-") as tmp, _quiet():
        picks = list(callbacks)
        checkpoint = None
        if val_loader is not None:
            checkpoint = ModelCheckpoint(
                dirpath=tmp, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                save_weights_only=True, enable_version_counter=False,
            )  # fmt: skip
            picks.append(checkpoint)
            if recipe.early_stopping_patience > 0:
                picks.append(
                    EarlyStopping(
                        monitor=monitor, mode=mode, patience=recipe.early_stopping_patience
                    )
                )
        trainer = pl.Trainer(
            accelerator=runtime.accelerator, devices=1, precision=runtime.precision,
            max_epochs=recipe.epochs, logger=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
            enable_checkpointing=checkpoint is not None, callbacks=picks,
            limit_val_batches=1.0 if val_loader is not None else 0, default_root_dir=tmp,
        )  # fmt: skip
        t0 = time.perf_counter()
        trainer.fit(module, train_loader, val_loader)
        best_epoch = max(len(module.train_loss) - 1, 0)
        if checkpoint is not None and checkpoint.best_model_path:
            state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
            best_epoch = int(state["epoch"])
        train_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        trainer.test(module, test_loader, verbose=False)
        test_seconds = time.perf_counter() - t1
    result = dict(module.test_result or {})
    result.update(best_epoch=best_epoch, train_seconds=train_seconds, test_seconds=test_seconds)
    if checkpoint is not None and best_epoch in module.val_history:
        result["val"] = module.val_history[best_epoch]
        epochs = sorted(module.val_history)
        result["val_loss"] = [module.val_history[e]["loss"] for e in epochs]
        result[f"val_{metric}"] = [module.val_history[e][metric] for e in epochs]
    return result


def _counts(prefix: str, counts: dict[str, int], task: str) -> dict[str, int]:
    out = {f"{prefix}_images": counts["images"]}
    if task == SEGMENTATION:
        out[f"{prefix}_pixels"] = counts["pixels"]
    return out


def _feature_stats(feats: torch.Tensor, standardise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of features ``[N, C, h, w]`` or ``[N, C]`` (identity when
    not ``standardise``)."""
    c = feats.shape[1]
    if not standardise:
        return torch.zeros(c), torch.ones(c)
    dims = (0, 2, 3) if feats.ndim == 4 else (0,)
    mean = feats.mean(dim=dims, keepdim=True)
    std = feats.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return mean.flatten(), std.flatten()


def evaluate_encoder(
    encoder: nn.Module,
    train_ds: Dataset,
    test_ds: Dataset,
    num_classes: int,
    settings: EvaluateSettings | RecipeSettings,
    protocol: str = "frozen",
    *,
    val_ds: Dataset | None = None,
    task: str = SEGMENTATION,
    first_n: int = DEFAULT_FIRST_N,
    keep_model: bool = False,
    head: str | None = None,
    seed: int | None = None,
    runtime: Runtime | None = None,
    baseline: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Train a head (and, by ``protocol``, part of the encoder) on ``train_ds``; score
    ``test_ds``.

    ``settings``: the evaluation section (its recipe, with its overrides, and where it runs)
    or a recipe (then ``seed`` and ``runtime``, default seed 0 on the CPU). ``head``: a kind
    of :mod:`spectralearth.models.heads` (default the recipe's). ``task``: segmentation,
    multilabel or regression (``num_classes`` = outputs; ``baseline`` = the regression
    metrics' naive prediction, default 0). The caller's encoder is never changed, and the
    global RNG state is left as it was.

    Returns the metrics of :mod:`spectralearth.downstream.metrics` for ``test_ds`` (and, with
    ``val_ds``, the selected epoch's under ``"val"``), ``best_epoch``, the training loss per
    epoch, image and pixel counts, timings (``seconds`` = all of it), ``peak_mem_mb`` (peak
    RSS of this evaluation) and ``peak_gpu_mem_mb`` (NaN without CUDA). With ``keep_model``
    the trained model (a :class:`spectralearth.models.heads.DownstreamModel`, on the CPU;
    on the cached path it shares the caller's encoder) is under ``"model"``: pop it before
    keeping the result around.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; have {PROTOCOLS}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if num_classes < 1 or (task != REGRESSION and num_classes < 2):
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    from spectralearth.models.heads import LINEAR, resolve_head

    if isinstance(settings, EvaluateSettings):
        recipe = settings.recipe_for(None)
        seed = settings.seed if seed is None else seed
        runtime = runtime or Runtime.of(settings)
    else:
        recipe, seed, runtime = settings, 0 if seed is None else seed, runtime or Runtime()
    head = resolve_head(head or recipe.head, encoder, task)
    trainable_modules(encoder, protocol, first_n, recipe.first_n_from)  # refuse early
    cached = protocol == "frozen" and head == LINEAR and recipe.cache_features
    cached = cached and not recipe.augment
    t0 = time.perf_counter()
    with PeakMemory() as peak:
        run = _evaluate_cached if cached else _evaluate_end_to_end
        result = run(
            encoder, train_ds, test_ds, val_ds, num_classes, recipe, seed, runtime, task,
            protocol, first_n, head, baseline,
        )  # fmt: skip
    result.update(
        protocol=protocol,
        task=task,
        head=head,
        num_classes=num_classes,
        epochs=recipe.epochs,
        seconds=time.perf_counter() - t0,
        peak_mem_mb=peak.rss_mb,
        peak_gpu_mem_mb=peak.gpu_mb,
    )
    if protocol == "first-n":
        result["first_n"] = first_n
    if not keep_model:
        result.pop("model")
    return result


def _task_module(model, num_classes, recipe, task, baseline):
    from spectralearth.downstream.tasks import TASK_MODULES

    return TASK_MODULES[task](model, num_classes, recipe, baseline)


def _evaluate_cached(
    encoder, train_ds, test_ds, val_ds, num_classes, recipe, seed, runtime, task, protocol,
    first_n, head_kind, baseline,
):  # fmt: skip
    from spectralearth.downstream.tasks import FeatureHead, check_targets
    from spectralearth.models.heads import DownstreamModel, make_head, pooling_for

    pool = pooling_for(encoder) if task != SEGMENTATION else "mean"  # pool: pooled tasks only
    pooled = pool == "token"
    bs = recipe.batch_size
    t0 = time.perf_counter()
    was_training = encoder.training
    encoder.eval()
    try:
        train_f, train_m = extract_features(encoder, train_ds, bs, runtime, pooled)
        test_f, test_m = extract_features(encoder, test_ds, bs, runtime, pooled)
        val = extract_features(encoder, val_ds, bs, runtime, pooled) if val_ds else None
    finally:
        encoder.train(was_training)
    t_feat = time.perf_counter() - t0
    for m in (train_m, test_m) + ((val[1],) if val else ()):
        check_targets(m, num_classes, task)
    mu, sd = _feature_stats(train_f, recipe.standardise_features)
    num_features = train_f.shape[1]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = make_head(num_features, num_classes, task)
        gen = torch.Generator().manual_seed(seed)
        module = _task_module(FeatureHead(head, mu, sd, task, pool), num_classes, recipe, task,
                              baseline)  # fmt: skip
        loader = {"batch_size": bs, "num_workers": 0}
        train = DataLoader(
            TensorDataset(train_f, train_m), sampler=EpochPermutation(len(train_f), gen), **loader
        )
        result = fit_and_test(
            module, train,
            DataLoader(TensorDataset(*val), **loader) if val else None,
            DataLoader(TensorDataset(test_f, test_m), **loader),
            recipe, runtime, [ProtocolFinetuning(protocol, first_n)],
        )  # fmt: skip
    module.cpu()
    result.update(
        num_features=num_features,
        feature_size=list(train_f.shape[-2:]) if train_f.ndim == 4 else [],
        train_loss=module.train_loss,
        feature_seconds=t_feat,
        **_counts("train", _target_counts(train_m, task), task),
        **_counts("test", _target_counts(test_m, task), task),
    )
    result["model"] = DownstreamModel(encoder, module.model.head, mu, sd, task, pool)
    return result


def _target_counts(target: torch.Tensor, task: str) -> dict[str, int]:
    counts = {"images": int(target.shape[0]), "pixels": 0}
    if task == SEGMENTATION:
        counts["pixels"] = int((target != IGNORE_INDEX).sum())
    return counts


def _evaluate_end_to_end(
    encoder, train_ds, test_ds, val_ds, num_classes, recipe, seed, runtime, task, protocol,
    first_n, head_kind, baseline,
):  # fmt: skip
    from spectralearth.models.heads import DownstreamModel, make_head, pooling_for, prepare_encoder

    bs = recipe.batch_size
    device = runtime.device
    loader = {"batch_size": bs, "num_workers": runtime.num_workers}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = prepare_encoder(copy.deepcopy(encoder), head_kind).to(device)
        pool = pooling_for(model) if task != SEGMENTATION else "mean"
        pooled = pool == "token"
        # Fixed per-channel standardisation of the initial features (as on the cached path)
        model.eval()
        with torch.no_grad(), runtime.autocast():
            firsts = []
            for i, (images, _) in enumerate(DataLoader(train_ds, **loader)):
                images = images.to(device)
                firsts.append((model(images) if pooled else model.forward_features(images)).float())
                if i >= 3 or not recipe.standardise_features:
                    break
            f0 = torch.cat(firsts)
        model.train()
        mu, sd = _feature_stats(f0.cpu(), recipe.standardise_features)
        num_features = f0.shape[1]
        patch = int(getattr(model, "patch_size", 0) or 0)
        head = make_head(num_features, num_classes, task, head_kind, patch)
        net = DownstreamModel(model, head, mu, sd, task, pool)
        module = _task_module(net, num_classes, recipe, task, baseline)
        gen = torch.Generator().manual_seed(seed)
        result = fit_and_test(
            module,
            DataLoader(train_ds, shuffle=True, generator=gen, **loader),
            DataLoader(val_ds, **loader) if val_ds is not None else None,
            DataLoader(test_ds, **loader),
            recipe,
            runtime,
            [ProtocolFinetuning(protocol, first_n, recipe.first_n_from, recipe.frozen_batchnorm)],
        )
    module.cpu()
    result.update(
        num_features=num_features,
        feature_size=list(f0.shape[-2:]) if f0.ndim == 4 else [],
        train_loss=module.train_loss,
        trainable_encoder_params=module.trainable_encoder_params,
        **_counts("train", module.train_counts, task),
        **_counts("test", module.test_counts, task),
    )
    result["model"] = net.cpu().eval()
    return result
