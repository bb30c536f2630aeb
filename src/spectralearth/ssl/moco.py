"""MoCo-v2 with two acquisition dates of a location as the two views.

Built from lightly's pieces: ``MoCoProjectionHead``, ``NTXentLoss`` with a memory bank
(the MoCo queue), ``update_momentum`` / ``deactivate_requires_grad`` for the key
encoder and ``batch_shuffle`` (shuffle BN across devices).

Defaults are the SpectralEarth reference's (``configs/experiment/pretrain/moco`` and
``MoCoModule``): temperature 0.1, a 2-layer 2048-d projection head with BatchNorm, SGD
(momentum 0.9, weight decay 1e-4) with ``MultiStepLR`` (x0.1 at 60% and 80% of the run:
epochs 60 and 80 of 100), a 32768-key queue, key momentum 0.999, random resized crops of
scale 0.08-1 (0.08-0.2 for crops under 32 px, as the reference), blur and flips.
Deviation: the key batch is shuffled across devices (MoCo's shuffle BN; the reference
relies on ``sync_batchnorm`` instead, which the paper profile turns on too).
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import (
    batch_shuffle,
    batch_unshuffle,
    deactivate_requires_grad,
    update_momentum,
)
from torch import nn

from .. import names
from ..config import PretrainSettings
from ..data.augment import SpatialAugment
from .base import SSLModule


def reference_crop_scale(crop_size: int) -> tuple[float, float]:
    """The reference MoCo's crop area range: 0.08-1, or 0.08-0.2 for crops under 32 px."""
    return (0.08, 0.2) if int(crop_size) < 32 else (0.08, 1.0)


class MoCo(SSLModule):
    """MoCo-v2: query encoder + MLP head, EMA key encoder + head, queue of keys.

    Batches are pairs ``(x_query, x_key)`` of [B, C, P, P] tensors (two dates of the same
    locations, see ``ShardPatches(two_dates=True)``); each view is augmented here, on the
    training device, with :class:`SpatialAugment` (no spectral jitter).

    The trained query encoder is ``self.encoder``; the key encoder ``self.key_encoder``.
    """

    name = "moco"
    two_views = True  # wants ShardPatches(two_dates=True)

    def __init__(
        self,
        encoder: nn.Module,
        *,
        lr: float = 0.03,
        max_steps: int = 1000,
        crop_size: int = 128,
        crop_scale: tuple[float, float] | None = None,  # None: reference_crop_scale(crop_size)
        memory_bank_size: int = 32768,
        temperature: float = 0.1,
        ema_momentum: float = 0.999,
        proj_hidden_dim: int = 2048,
        proj_out_dim: int = 128,
        batch_norm_head: bool = True,
        sgd_momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        lr_schedule: str = names.MULTISTEP,
        lr_milestones: tuple[float, ...] = (0.6, 0.8),
    ) -> None:
        super().__init__()
        if crop_scale is None:
            crop_scale = reference_crop_scale(crop_size)
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.projection_head = MoCoProjectionHead(
            input_dim=int(encoder.num_features),
            hidden_dim=proj_hidden_dim,
            output_dim=proj_out_dim,
            batch_norm=batch_norm_head,
        )
        self.key_encoder = copy.deepcopy(encoder)
        self.key_projection_head = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.key_encoder)
        deactivate_requires_grad(self.key_projection_head)
        self.criterion = NTXentLoss(
            temperature=temperature,
            memory_bank_size=(memory_bank_size, proj_out_dim),
            gather_distributed=True,  # enqueue keys from every device (a no-op on one)
        )
        self.augment = SpatialAugment(crop_size, scale=tuple(crop_scale))

    @classmethod
    def from_settings(cls, encoder: nn.Module, settings: PretrainSettings) -> MoCo:
        options = {
            "weight_decay": settings.weight_decay,
            "crop_scale": settings.crop_scale,
            "lr_schedule": settings.lr_schedule,
            "lr_milestones": settings.lr_milestones,
            "proj_hidden_dim": settings.head_hidden_dim,
            "ema_momentum": settings.ema_momentum,
        }
        return cls(
            encoder,
            lr=settings.lr,
            max_steps=settings.steps,
            crop_size=settings.crop_size,
            memory_bank_size=settings.memory_bank_size,
            warmup_steps=settings.warmup_steps,
            warmup_epochs=settings.warmup_epochs,
            **{k: v for k, v in options.items() if v is not None},
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Query embedding (before normalisation) [B, proj_out_dim]."""
        return self.projection_head(self.encoder(x))

    @torch.no_grad()
    def forward_key(self, x: torch.Tensor) -> torch.Tensor:
        # Shuffle BN: with several devices the key batch is shuffled across them so that
        # batch statistics cannot leak which query matches which key.
        distributed = self._trainer is not None and self._trainer.world_size > 1
        x, shuffle = batch_shuffle(x, distributed=distributed)
        k = self.key_projection_head(self.key_encoder(x))
        return batch_unshuffle(k, shuffle, distributed=distributed)

    def training_loss(self, batch) -> torch.Tensor:
        x_query, x_key = batch
        x_query, x_key = self.prepare(x_query), self.prepare(x_key)
        x_query, x_key = self.augment(x_query), self.augment(x_key)
        m = self.hparams.ema_momentum
        update_momentum(self.encoder, self.key_encoder, m)
        update_momentum(self.projection_head, self.key_projection_head, m)
        features = self.encoder(x_query)
        self.monitor(features)
        q = self.projection_head(features)
        k = self.forward_key(x_key)
        return self.criterion(q.float(), k.float())

    def configure_optimizers(self):
        params = list(self.encoder.parameters()) + list(self.projection_head.parameters())
        optimizer = torch.optim.SGD(
            params,
            lr=self.hparams.lr,
            momentum=self.hparams.sgd_momentum,
            weight_decay=self.hparams.weight_decay,
        )
        return self.learning_rate_schedule(optimizer)
