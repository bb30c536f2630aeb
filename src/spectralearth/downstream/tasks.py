"""One LightningModule per downstream task kind: segmentation, multi-label, regression.

Each trains ``model`` with a recipe (:class:`~spectralearth.config.RecipeSettings`) and
scores it with the task's :mod:`~spectralearth.downstream.metrics` (a ``MetricCollection``
on the model's device). ``model`` is either

* a :class:`~spectralearth.models.heads.DownstreamModel` (encoder + standardisation +
  head) that takes images: what trains of its encoder is the protocol's
  (:class:`~spectralearth.downstream.finetuning.ProtocolFinetuning`), or
* a :class:`FeatureHead` that takes features cached from a frozen encoder (the cheap path
  of the frozen protocol with a linear head).

Losses: cross-entropy over labelled pixels (ignore index -1; a batch without one is
skipped), binary cross-entropy with logits, and the reference's regression loss (each
target's MSE over the batch divided by the MSE of the naive ``baseline``, averaged over
targets). Optimiser: Adam or AdamW at ``lr`` for the head and ``lr x encoder_lr_scale``
for the encoder parameters that train; ``cosine`` anneals both per epoch to ``min_lr``.

After each validation epoch the module logs ``val_loss`` and ``val_<metric>`` (what
``ModelCheckpoint`` selects on) and keeps every epoch's full results in
:attr:`DownstreamTask.val_history`; ``test_result`` holds the test metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from spectralearth.cards import MULTILABEL, REGRESSION, SEGMENTATION
from spectralearth.config import RecipeSettings
from spectralearth.downstream.augment import CropFlip
from spectralearth.downstream.metrics import IGNORE_INDEX, metrics_for
from spectralearth.models.heads import MEAN, apply_head


class FeatureHead(nn.Module):
    """Standardisation + head on cached encoder features (``[B, C, h, w]``, or ``[B, C]``
    pooled embeddings for ``pool="token"``); ``forward(features, size)``."""

    def __init__(
        self,
        head: nn.Module,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        task: str,
        pool: str = MEAN,
    ) -> None:
        super().__init__()
        self.head = head
        self.task = task
        self.pool = pool
        c = int(feature_mean.numel())
        self.register_buffer("feature_mean", feature_mean.detach().reshape(1, c, 1, 1).clone())
        self.register_buffer("feature_std", feature_std.detach().reshape(1, c, 1, 1).clone())

    def forward(self, features: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return apply_head(
            self.head, features, self.feature_mean, self.feature_std, self.task, self.pool, size
        )


def check_targets(target: torch.Tensor, num_classes: int, task: str) -> None:
    """Raise when targets do not fit the task's classes or outputs."""
    if task == SEGMENTATION and target.numel() and int(target.max()) >= num_classes:
        raise ValueError(f"labels exceed num_classes={num_classes}")
    if task in (MULTILABEL, REGRESSION) and target.shape[-1] != num_classes:
        what = "multi-label targets have" if task == MULTILABEL else "regression targets have"
        raise ValueError(f"{what} {target.shape[-1]} classes, not {num_classes}")


class DownstreamTask(pl.LightningModule):
    """The shared training and scoring; subclasses give the task's loss."""

    task: ClassVar[str] = ""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        recipe: RecipeSettings,
        baseline: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.recipe = recipe
        self.cached = isinstance(model, FeatureHead)
        self.val_metrics = metrics_for(self.task, num_classes, baseline)
        self.test_metrics = metrics_for(self.task, num_classes, baseline)
        self.augment = CropFlip(recipe.crop_scale) if recipe.augment and not self.cached else None
        self.train_loss: list[float] = []
        self.val_history: dict[int, dict[str, Any]] = {}
        self.test_result: dict[str, Any] | None = None
        self.train_counts = {"images": 0, "pixels": 0}
        self.test_counts = {"images": 0, "pixels": 0}
        self.trainable_encoder_params = 0
        self._sums = {"train": [0.0, 0], "val": [0.0, 0]}

    @property
    def encoder(self) -> nn.Module | None:
        """The encoder that may train (None for a head on cached features)."""
        return None if self.cached else self.model.encoder

    # --- the task's pieces -------------------------------------------------------------

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.model(x, size) if self.cached else self.model(x)

    def _out(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self(x, tuple(target.shape[-2:]) if self.task == SEGMENTATION else None)

    def _count(self, counts: dict[str, int], target: torch.Tensor) -> None:
        counts["images"] += int(target.shape[0])
        if self.task == SEGMENTATION:
            counts["pixels"] += int((target != IGNORE_INDEX).sum())

    # --- training ----------------------------------------------------------------------

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.trainer is not None and self.trainer.training:
            if self.current_epoch == 0:
                check_targets(y, self.num_classes, self.task)
                self._count(self.train_counts, y)
            if self.augment is not None:
                if self.task == SEGMENTATION:
                    x, y = self.augment(x, y)
                else:
                    x = self.augment(x)
        return x, y

    def on_train_epoch_start(self) -> None:
        self._sums["train"] = [0.0, 0]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        loss = self.loss(self._out(x, y), y)
        if loss is None:
            return None  # Lightning skips the step
        total = self._sums["train"]
        total[0] += float(loss.detach()) * len(x)
        total[1] += len(x)
        return loss

    def on_train_epoch_end(self) -> None:
        total, count = self._sums["train"]
        self.train_loss.append(total / max(count, 1))

    # --- validation and test -----------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._sums["val"] = [0.0, 0]

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        check_targets(y, self.num_classes, self.task)
        out = self._out(x, y)
        self.val_metrics.update(out, y)
        loss = self.loss(out, y)
        if loss is not None:
            self._sums["val"][0] += float(loss) * len(x)
            self._sums["val"][1] += len(x)

    def on_validation_epoch_end(self) -> None:
        result = self.val_metrics.compute()
        self.val_metrics.reset()
        total, count = self._sums["val"]
        result["loss"] = total / count if count else float("nan")
        self.val_history[int(self.current_epoch)] = result
        self.log("val_loss", result["loss"])
        for name in self.val_metrics.names:
            self.log(f"val_{name}", result[name])

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        check_targets(y, self.num_classes, self.task)
        self._count(self.test_counts, y)
        self.test_metrics.update(self._out(x, y), y)

    def on_test_epoch_end(self) -> None:
        self.test_result = self.test_metrics.compute()
        self.test_metrics.reset()

    # --- optimisation ------------------------------------------------------------------

    def configure_optimizers(self):
        r = self.recipe
        head = list(self.model.head.parameters())
        encoder = self.encoder
        trained = [p for p in encoder.parameters() if p.requires_grad] if encoder else []
        self.trainable_encoder_params = sum(p.numel() for p in trained)
        groups = [{"params": head, "lr": r.lr}]
        if trained:  # none under `frozen` (a dense head on the frozen encoder)
            groups.append({"params": trained, "lr": r.lr * r.encoder_lr_scale})
        optim = torch.optim.AdamW if r.optimizer == "adamw" else torch.optim.Adam
        optimizer = optim(groups, weight_decay=r.weight_decay)
        if r.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=r.epochs, eta_min=r.min_lr
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
            }
        return optimizer


class SegmentationTask(DownstreamTask):
    """Per-pixel classes; cross-entropy over the labelled pixels."""

    task = SEGMENTATION

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        if not (target != IGNORE_INDEX).any():
            return None  # no labelled pixel: the mean loss is undefined
        return F.cross_entropy(out, target.long(), ignore_index=IGNORE_INDEX)


class MultilabelTask(DownstreamTask):
    """Multi-hot classes per image; binary cross-entropy with logits."""

    task = MULTILABEL

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out, target.float())


class RegressionTask(DownstreamTask):
    """Real-valued targets per image; the reference's normalised MSE against ``baseline``."""

    task = REGRESSION

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        recipe: RecipeSettings,
        baseline: Sequence[float] | None = None,
    ) -> None:
        super().__init__(model, num_classes, recipe, baseline)
        values = list(baseline) if baseline is not None else [0.0] * num_classes
        self.register_buffer("baseline", torch.tensor(values, dtype=torch.float32))

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        model = F.mse_loss(out, target, reduction="none").mean(dim=0)
        base = F.mse_loss(self.baseline.expand_as(target), target, reduction="none").mean(dim=0)
        return (model / base).mean()


TASK_MODULES: dict[str, type[DownstreamTask]] = {
    SEGMENTATION: SegmentationTask,
    MULTILABEL: MultilabelTask,
    REGRESSION: RegressionTask,
}
