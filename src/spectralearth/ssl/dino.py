"""DINO with two acquisition dates of a location as the two views.

Built from lightly's pieces: ``DINOProjectionHead`` (2048 hidden, 256 bottleneck, 128 out),
``DINOLoss`` (teacher centring and sharpening) with a linear teacher-temperature warm-up
(``linear_warmup_schedule``), ``update_momentum`` / ``deactivate_requires_grad`` for the
EMA teacher and ``cosine_schedule`` for its momentum.

The teacher momentum follows a cosine from 0.996 to 1 over the WHOLE run (every optimizer
step of it, epochs x batches / accumulation when the profile counts epochs): it stays
below 1 until the final step. (The SpectralEarth reference code's schedule reaches 1 after
10 epochs and freezes the teacher for the rest of a 100-epoch run.)

Views: the two global views are two dates of the same place (an augmented copy of the same
patch for a place seen once), each augmented with :class:`SpatialAugment` as for MoCo. No
multi-crop local views: kept simple, and the patches are small (128 px) already.
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule, linear_warmup_schedule
from torch import nn

from ..config import PretrainSettings
from ..data.augment import SpatialAugment
from .base import SSLModule, warmup_cosine


class DINO(SSLModule):
    """DINO: student encoder + DINO head, EMA teacher encoder + head, DINO loss.

    Batches are pairs ``(x1, x2)`` of [B, C, P, P] tensors (two dates, see
    ``ShardPatches(two_dates=True)``). The trained student encoder is ``self.encoder``;
    ``momentum_history`` and ``teacher_temp_history`` record the schedules per step.
    """

    name = "dino"
    two_views = True

    def __init__(
        self,
        encoder: nn.Module,
        *,
        lr: float = 1e-3,
        max_steps: int = 1000,
        crop_size: int = 128,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        proj_hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 128,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.07,
        teacher_temp_warmup_frac: float = 0.3,  # DINO: 30 of 100 epochs
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        weight_decay: float = 0.04,
        batch_norm_head: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder

        def head() -> DINOProjectionHead:
            return DINOProjectionHead(
                input_dim=int(encoder.num_features),
                hidden_dim=proj_hidden_dim,
                bottleneck_dim=bottleneck_dim,
                output_dim=out_dim,
                batch_norm=batch_norm_head,
            )

        self.head = head()
        self.teacher_encoder = copy.deepcopy(encoder)
        # A second head with the student's weights (weight_norm heads cannot be deep-copied).
        self.teacher_head = head()
        self.teacher_head.load_state_dict(self.head.state_dict())
        deactivate_requires_grad(self.teacher_encoder)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(
            output_dim=out_dim,
            warmup_teacher_temp=warmup_teacher_temp,
            teacher_temp=teacher_temp,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )
        self.augment = SpatialAugment(crop_size)
        self.momentum_history: list[float] = []
        self.teacher_temp_history: list[float] = []

    @classmethod
    def from_settings(cls, encoder: nn.Module, settings: PretrainSettings) -> DINO:
        hidden = 2048
        if settings.accelerator == "cpu":  # as MoCo: a small encoder gets a small head
            hidden = min(hidden, int(encoder.num_features))
        return cls(
            encoder,
            lr=settings.lr,
            max_steps=settings.steps,
            crop_size=settings.crop_size,
            warmup_steps=settings.warmup_steps,
            warmup_epochs=settings.warmup_epochs,
            proj_hidden_dim=hidden,
            **({} if settings.weight_decay is None else {"weight_decay": settings.weight_decay}),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Student output [B, out_dim] (logits before the temperature softmax)."""
        return self.head(self.encoder(x))

    @torch.no_grad()
    def forward_teacher(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher_head(self.teacher_encoder(x))

    def momentum(self, step: int) -> float:
        """Teacher EMA momentum at optimizer step ``step``: cosine over the whole run."""
        total, _ = self.schedule_lengths()
        hp = self.hparams
        return cosine_schedule(min(step, total), total, hp.momentum_start, hp.momentum_end)

    def teacher_temperature(self, step: int) -> float:
        total, _ = self.schedule_lengths()
        hp = self.hparams
        warmup = int(round(hp.teacher_temp_warmup_frac * total))
        return linear_warmup_schedule(step, warmup, hp.warmup_teacher_temp, hp.teacher_temp)

    def training_loss(self, batch) -> torch.Tensor:
        x1, x2 = batch
        x1, x2 = self.augment(self.prepare(x1)), self.augment(self.prepare(x2))
        step = int(self.global_step)
        m = self.momentum(step)
        update_momentum(self.encoder, self.teacher_encoder, m)
        update_momentum(self.head, self.teacher_head, m)
        temp = self.teacher_temperature(step)
        self.momentum_history.append(m)
        self.teacher_temp_history.append(temp)
        teacher_out = [self.forward_teacher(x1).float(), self.forward_teacher(x2).float()]
        student_out = [self.forward(x1).float(), self.forward(x2).float()]
        loss = self.criterion(teacher_out, student_out, teacher_temp=temp)
        bs = x1.shape[0]
        self.log("teacher_momentum", m, on_step=True, on_epoch=False, batch_size=bs)
        self.log("teacher_temp", temp, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        params += [p for p in self.head.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        total, warmup = self.schedule_lengths(self.hparams.warmup_steps, self.hparams.warmup_epochs)
        return self.step_scheduler(optimizer, lambda step: warmup_cosine(step, total, warmup))
