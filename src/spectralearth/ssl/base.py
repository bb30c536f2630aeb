"""What every self-supervised method shares: the training step around the method's loss.

A method subclasses :class:`SSLModule` and implements ``training_loss(batch) -> loss``,
handing the encoder's pooled features of the batch to ``self.monitor`` on the way; the
base class normalises int16 batches on the device (``self.normalize``, set by ``pretrain``),
stops the run on a NaN or inf loss with the step in the message (on every rank at once
under DDP), keeps ``loss_history`` (the loss of the global batch: the mean over ranks) and
logs ``train_loss``, ``lr`` and the collapse measures ``feature_std`` and
``effective_rank`` (:mod:`spectralearth.ssl.collapse`) each step.

Schedules are per optimizer step. Their length comes from the trainer
(``estimated_stepping_batches``: ``max_steps``, or epochs x batches / accumulation), so a
profile can give either ``steps`` or ``epochs``. :func:`lr_factor` holds the learning-rate
schedules (``names.LR_SCHEDULES``); :meth:`SSLModule.adamw` the weight-decay split.

Every checkpoint this module writes carries ``checkpoint["spectralearth"]`` (method,
backbone, bands), so that ``--resume`` can tell a checkpoint of another run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import lightning.pytorch as pl
import torch
from lightly.utils.scheduler import cosine_warmup_schedule
from torch import nn

from .. import names
from .collapse import effective_rank, feature_std

CHECKPOINT_META = "spectralearth"  # the key of the run's identity in a Lightning checkpoint
# parameters that are tokens or positions (timm's ``no_weight_decay()`` names, lightly's
# mask tokens): no weight decay, as DINO's and MAE's own code
TOKEN_PARAMETERS = ("cls_token", "reg_token", "dist_token", "mask_token", "pos_embed")


class NonFiniteLossError(FloatingPointError):
    """A NaN or inf training loss: the run stops rather than continue silently."""


def warmup_cosine(step: int, total: int, warmup: int = 0) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 one step
    after the last one (lightly's ``cosine_warmup_schedule``)."""
    total = max(1, int(total))
    warmup = min(max(0, int(warmup)), total)
    return cosine_warmup_schedule(min(step, total), total + 1, 1.0, 0.0, warmup, 0.0)


def lr_factor(
    schedule: str,
    step: int,
    total: int,
    warmup: int = 0,
    milestones: Sequence[float] = (0.6, 0.8),
    gamma: float = 0.1,
) -> float:
    """The learning rate of optimizer step ``step`` of ``total``, as a factor of the base lr.

    Every schedule starts with a linear warm-up over ``warmup`` steps (lr/warmup at step 0),
    then:

    - ``multistep``: x ``gamma`` at each milestone (a fraction of the run): the reference
      MoCo's ``MultiStepLR(milestones=[60, 80], gamma=0.1)`` of 100 epochs is (0.6, 0.8);
    - ``cosine_to_zero``: a cosine from 1 to 0 over the steps after the warm-up (without a
      warm-up, the reference MAE's ``CosineAnnealingLR(T_max=max_epochs)``);
    - ``cosine_over_run``: a cosine whose half-period is the whole run, started after the
      warm-up: the reference DINO's ``SequentialLR(LinearLR, CosineAnnealingLR(T_max=
      max_epochs))``, which ends near 10% of the lr after a 20% warm-up.

    The reference steps its schedulers once per epoch; these move every optimizer step.
    """
    total = max(1, int(total))
    warmup = min(max(0, int(warmup)), total)
    step = min(max(0, int(step)), total)
    if schedule == names.COSINE_TO_ZERO:
        return warmup_cosine(step, total, warmup)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == names.COSINE_OVER_RUN:
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / total))
    if schedule == names.MULTISTEP:
        passed = sum(step >= round(float(m) * total) for m in milestones)
        return float(gamma) ** passed
    raise ValueError(f"unknown lr_schedule {schedule!r}; known: {', '.join(names.LR_SCHEDULES)}")


def weight_decay_groups(
    modules: Iterable[nn.Module], weight_decay: float, decay_all: bool = False
) -> list[dict]:
    """AdamW parameter groups of the trainable parameters of ``modules``.

    By default norms, biases (lightly's ``get_weight_decay_parameters``) and tokens or
    position embeddings (:data:`TOKEN_PARAMETERS`) get no weight decay, as in DINO's and
    MAE's own code; ``decay_all`` decays every parameter (the SpectralEarth reference
    code's ``AdamW(self.parameters())``).
    """
    from lightly.models.utils import get_weight_decay_parameters

    modules = list(modules)
    if decay_all:
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        return [{"name": "decay", "params": params, "weight_decay": weight_decay}]
    decay, no_decay = get_weight_decay_parameters(modules)
    tokens = {
        id(p)
        for m in modules
        for name, p in m.named_parameters()
        if name.rsplit(".", 1)[-1] in TOKEN_PARAMETERS
    }
    no_decay_ids = {id(p) for p in no_decay} | tokens
    seen: set[int] = set()
    groups: dict[str, list] = {"decay": [], "no_decay": []}
    for p in [*decay, *no_decay]:
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        groups["no_decay" if id(p) in no_decay_ids else "decay"].append(p)
    return [
        {"name": "decay", "params": groups["decay"], "weight_decay": weight_decay},
        {"name": "no_decay", "params": groups["no_decay"], "weight_decay": 0.0},
    ]


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
        # collapse measures of every step (rank-local batches) and the embedding width
        self.feature_std_history: list[float] = []
        self.effective_rank_history: list[float] = []
        self.embedding_dim = 0
        self._monitored: tuple[float, float] | None = None

    def on_train_start(self) -> None:
        self.start_step = int(self.global_step)

    # --- to implement -------------------------------------------------------------------

    def training_loss(self, batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Per-band normalisation on the device (batches may arrive as raw int16)."""
        return self.normalize(x) if self.normalize is not None else x

    def monitor(self, features: torch.Tensor) -> None:
        """Collapse measures of this step's pooled encoder features [B, D] (no gradient)."""
        z = features.detach().float().flatten(start_dim=1)
        self.embedding_dim = int(z.shape[1])
        self._monitored = (feature_std(z), effective_rank(z))

    def identity(self) -> dict:
        """What a checkpoint of this module holds: method, backbone, bands."""
        encoder = getattr(self, "encoder", None)
        return {
            "method": self.name,
            "backbone": getattr(encoder, "model_name", None),
            "in_chans": getattr(encoder, "in_chans", None),
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_META] = self.identity()

    def learning_rate_schedule(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer with the method's ``lr_schedule`` (per step) and its warm-up."""
        hp = self.hparams
        total, warmup = self.schedule_lengths(hp.warmup_steps, hp.warmup_epochs)
        milestones = tuple(hp.lr_milestones)
        schedule = hp.lr_schedule

        def factor(step: int) -> float:
            return lr_factor(schedule, step, total, warmup, milestones)

        return self.step_scheduler(optimizer, factor)

    def schedule_lengths(self, warmup_steps: int = 0, warmup_epochs: float = 0.0):
        """(total optimizer steps of the run, warm-up steps) from the trainer.

        Without a trainer (a module used on its own) the run is ``hparams.max_steps`` long.
        """
        trainer = self._trainer
        if self._lengths is not None:  # asked every step: the trainer's answer is costly
            total, per_epoch = self._lengths
        elif trainer is None:
            total = int(self.hparams.get("max_steps", 1))
            per_epoch = total
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

    def global_loss(self, loss: torch.Tensor) -> float:
        """The loss of the whole global batch: the mean over ranks (the same on each)."""
        value = loss.detach().float().clone()  # all-reduce works in place: not on the loss
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            value = trainer.strategy.reduce(value, reduce_op="mean")
        return float(value)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self._monitored = None
        loss = self.training_loss(batch)
        self.check_finite(loss)
        value = self.global_loss(loss)
        self.loss_history.append(value)
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        bs = int(first.shape[0])
        self.log("train_loss", value, on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        if self._trainer is not None and self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("lr", lr, on_step=True, on_epoch=False, batch_size=bs)
        if self._monitored is not None:
            std, rank = self._monitored
            self.feature_std_history.append(std)
            self.effective_rank_history.append(rank)
            self.log("feature_std", std, on_step=True, on_epoch=False, batch_size=bs)
            self.log("effective_rank", rank, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def step_scheduler(self, optimizer: torch.optim.Optimizer, factor) -> dict:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
