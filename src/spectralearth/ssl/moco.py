"""MoCo-v2 with two acquisition dates of a location as the two views.

Built from lightly's pieces: ``MoCoProjectionHead``, ``NTXentLoss`` with a memory bank
(the MoCo queue), ``update_momentum`` / ``deactivate_requires_grad`` for the key
encoder, ``batch_shuffle`` (shuffle BN across devices) and ``cosine_schedule``.
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

from ..config import PretrainSettings
from ..data.augment import SpatialAugment
from .base import SSLModule, warmup_cosine


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
        memory_bank_size: int = 65536,
        temperature: float = 0.2,
        ema_momentum: float = 0.999,
        proj_hidden_dim: int = 2048,
        proj_out_dim: int = 128,
        sgd_momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.projection_head = MoCoProjectionHead(
            input_dim=int(encoder.num_features), hidden_dim=proj_hidden_dim, output_dim=proj_out_dim
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
        self.augment = SpatialAugment(crop_size)

    @classmethod
    def from_settings(cls, encoder: nn.Module, settings: PretrainSettings) -> MoCo:
        # MoCo-v2's 2048-d hidden layer; on CPU let it follow a smaller encoder's width.
        hidden = 2048
        if settings.accelerator == "cpu":
            hidden = min(hidden, int(encoder.num_features))
        return cls(
            encoder,
            lr=settings.lr,
            max_steps=settings.steps,
            crop_size=settings.crop_size,
            memory_bank_size=settings.memory_bank_size,
            proj_hidden_dim=hidden,
            warmup_steps=settings.warmup_steps,
            warmup_epochs=settings.warmup_epochs,
            **({} if settings.weight_decay is None else {"weight_decay": settings.weight_decay}),
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
        q = self.forward(x_query)
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
        total, warmup = self.schedule_lengths(self.hparams.warmup_steps, self.hparams.warmup_epochs)
        # Cosine decay from lr to 0 reached one step after the last one (after any warm-up).
        return self.step_scheduler(optimizer, lambda step: warmup_cosine(step, total, warmup))
