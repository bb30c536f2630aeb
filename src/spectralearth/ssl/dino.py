"""DINO with two acquisition dates of a location as the two views.

Built from lightly's pieces: ``DINOProjectionHead`` (2048 hidden, 256 bottleneck, 128 out,
its last layer frozen for the first epoch), ``DINOLoss`` (teacher centring and sharpening)
with a linear teacher-temperature warm-up (``linear_warmup_schedule``), ``update_momentum``
/ ``deactivate_requires_grad`` for the EMA teacher and ``cosine_schedule`` for its momentum.

Defaults are the SpectralEarth reference's (``configs/experiment/pretrain/dino`` and
``DINOModule``): AdamW with weight decay 1e-5, a 20-epoch linear warm-up then a cosine over
the run (``cosine_over_run``), teacher temperature 0.04 (lightly's warm-up 0.04 -> 0.04),
``freeze_last_layer`` 1 epoch, random resized crops of scale 0.05-1. Deliberate deviations,
each an option:

- the teacher momentum follows a cosine from 0.996 to 1 over the WHOLE run (every optimizer
  step of it): it stays below 1 until the final step. The reference's
  ``cosine_schedule(current_epoch, 10, 0.996, 1)`` reaches 1 after 10 epochs and freezes
  the teacher for the other 90 of a 100-epoch run (``teacher_momentum_epochs=10`` gives it);
- the teacher head starts as a copy of the student head, as in DINO (the reference builds
  it with its own random init: ``teacher_head_from_student=False``);
- no weight decay on norms, biases and tokens (``weight_decay_all_parameters``).

Views: the two global views are two dates of the same place (an augmented copy of the same
patch for a place seen once), each augmented with :class:`SpatialAugment`. No multi-crop
local views (the reference's default too: ``multicrop: false``).
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule, linear_warmup_schedule
from torch import nn

from .. import names
from ..config import PretrainSettings
from ..data.augment import SpatialAugment
from .base import SSLModule, weight_decay_groups


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
        crop_scale: tuple[float, float] = (0.05, 1.0),
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        lr_schedule: str = names.COSINE_OVER_RUN,
        lr_milestones: tuple[float, ...] = (0.6, 0.8),  # lr_schedule multistep only
        proj_hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 128,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        teacher_momentum_epochs: float | None = None,  # None: the whole run
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.04,
        teacher_temp_warmup_frac: float = 0.1,  # the reference: 10 of 100 epochs
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        freeze_last_layer_epochs: int = 1,
        teacher_head_from_student: bool = True,
        weight_decay: float = 1e-5,
        weight_decay_all_parameters: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        batch_norm_head: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder

        def head(freeze_last_layer: int = -1) -> DINOProjectionHead:
            return DINOProjectionHead(
                input_dim=int(encoder.num_features),
                hidden_dim=proj_hidden_dim,
                bottleneck_dim=bottleneck_dim,
                output_dim=out_dim,
                batch_norm=batch_norm_head,
                freeze_last_layer=freeze_last_layer,
            )

        self.head = head(freeze_last_layer_epochs)
        self.teacher_encoder = copy.deepcopy(encoder)
        # A second head (weight_norm heads cannot be deep-copied), with the student's weights.
        self.teacher_head = head()
        if teacher_head_from_student:
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
        self.augment = SpatialAugment(crop_size, scale=tuple(crop_scale))
        self.momentum_history: list[float] = []
        self.teacher_temp_history: list[float] = []

    @classmethod
    def from_settings(cls, encoder: nn.Module, settings: PretrainSettings) -> DINO:
        options = {
            "weight_decay": settings.weight_decay,
            "crop_scale": settings.crop_scale,
            "lr_schedule": settings.lr_schedule,
            "lr_milestones": settings.lr_milestones,
            "proj_hidden_dim": settings.head_hidden_dim,
            "betas": settings.adamw_betas,
            "momentum_start": settings.ema_momentum,
        }
        return cls(
            encoder,
            lr=settings.lr,
            max_steps=settings.steps,
            crop_size=settings.crop_size,
            warmup_steps=settings.warmup_steps,
            warmup_epochs=settings.warmup_epochs,
            weight_decay_all_parameters=settings.weight_decay_all_parameters,
            **{k: v for k, v in options.items() if v is not None},
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Student output [B, out_dim] (logits before the temperature softmax)."""
        return self.head(self.encoder(x))

    @torch.no_grad()
    def forward_teacher(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher_head(self.teacher_encoder(x))

    def momentum(self, step: int) -> float:
        """Teacher EMA momentum at optimizer step ``step``: a cosine over the whole run (or
        over ``teacher_momentum_epochs``, then 1: the reference's schedule)."""
        hp = self.hparams
        total, _ = self.schedule_lengths()
        if hp.get("teacher_momentum_epochs") is not None:
            _, total = self.schedule_lengths(warmup_epochs=hp.teacher_momentum_epochs)
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
        features = self.encoder(x1)
        self.monitor(features)
        student_out = [self.head(features).float(), self.forward(x2).float()]
        loss = self.criterion(teacher_out, student_out, teacher_temp=temp)
        bs = x1.shape[0]
        self.log("teacher_momentum", m, on_step=True, on_epoch=False, batch_size=bs)
        self.log("teacher_temp", temp, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def on_after_backward(self) -> None:
        # the reference's freeze_last_layer: no update of the head's last layer at first
        self.head.cancel_last_layer_gradients(current_epoch=self.current_epoch)

    def configure_optimizers(self):
        hp = self.hparams
        groups = weight_decay_groups(
            [self.encoder, self.head], hp.weight_decay, hp.weight_decay_all_parameters
        )
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        return self.learning_rate_schedule(optimizer)
