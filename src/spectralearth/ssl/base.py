"""What every self-supervised method shares: the training step around the method's loss.

A method subclasses :class:`SSLModule` and implements ``training_loss(batch) -> loss``; the
base class normalises int16 batches on the device (``self.normalize``, set by ``pretrain``),
stops the run on a NaN or inf loss with the step in the message (on every rank at once
under DDP), keeps ``loss_history`` and logs ``train_loss`` and ``lr`` each step.

Schedules are per optimizer step. Their length comes from the trainer
(``estimated_stepping_batches``: ``max_steps``, or epochs x batches / accumulation), so a
profile can give either ``steps`` or ``epochs``.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from lightly.utils.scheduler import cosine_warmup_schedule


class NonFiniteLossError(FloatingPointError):
    """A NaN or inf training loss: the run stops rather than continue silently."""


def warmup_cosine(step: int, total: int, warmup: int = 0) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 one step
    after the last one (lightly's ``cosine_warmup_schedule``)."""
    total = max(1, int(total))
    warmup = min(max(0, int(warmup)), total)
    return cosine_warmup_schedule(min(step, total), total + 1, 1.0, 0.0, warmup, 0.0)


class SSLModule(pl.LightningModule):
    """Base LightningModule of the pretraining methods (see the module docstring)."""

    name = "ssl"
    two_views = True  # whether batches are two-date pairs from ShardPatches(two_dates=True)

    def __init__(self) -> None:
        super().__init__()
        self.normalize: torch.nn.Module | None = None  # set by pretrain() when batches are int16
        self.loss_history: list[float] = []
        self.start_step = 0  # the step this fit started at (> 0 when resumed)
        self._lengths: tuple[int, int] | None = None

    def on_train_start(self) -> None:
        self.start_step = int(self.global_step)

    # --- to implement -------------------------------------------------------------------

    def training_loss(self, batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Per-band normalisation on the device (batches may arrive as raw int16)."""
        return self.normalize(x) if self.normalize is not None else x

    def schedule_lengths(self, warmup_steps: int = 0, warmup_epochs: float = 0.0):
        """(total optimizer steps of the run, warm-up steps) from the trainer.

        Without a trainer (a module used on its own) the run is ``hparams.max_steps`` long.
        """
        trainer = self._trainer
        if trainer is None:
            total = int(self.hparams.get("max_steps", 1))
            per_epoch = total
        elif self._lengths is not None:  # asked every step: the trainer's answer is costly
            total, per_epoch = self._lengths
        else:
            total = int(trainer.estimated_stepping_batches)
            batches = trainer.num_training_batches
            if math.isfinite(batches) and batches > 0:
                per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
            else:
                per_epoch = total
            self._lengths = (total, per_epoch)
        warmup = int(warmup_steps) + int(round(float(warmup_epochs) * per_epoch))
        return max(1, total), min(warmup, max(1, total))

    def check_finite(self, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            # Every rank stops together: a rank raising alone would leave the others
            # waiting forever in the next all-reduce.
            finite = bool(trainer.strategy.reduce_boolean_decision(finite, all=True))
        if not finite:
            value = float(loss.detach().float().reshape(-1)[0])
            raise NonFiniteLossError(
                f"{self.name} loss is {value} at step {self.global_step} "
                f"(epoch {self.current_epoch}): stopping the run instead of training on. "
                "Look at the learning rate, the precision and the band statistics."
            )

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        self.check_finite(loss)
        self.loss_history.append(float(loss.detach()))
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        bs = int(first.shape[0])
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        if self._trainer is not None and self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("lr", lr, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def step_scheduler(self, optimizer: torch.optim.Optimizer, factor) -> dict:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
