"""The protocols as Lightning ``BaseFinetuning`` callbacks: what of the encoder trains.

* ``frozen``: nothing (the SpectralEarth paper's "linear probing"; its dense heads still
  train on the frozen features).
* ``adapter``: the spectral adapter.
* ``first-n``: the first ``first_n`` stages (:func:`encoder_stages`). How stages count is
  the recipe's ``first_n_from``: ``adapter`` (this project's: the adapter is stage 1, then
  the ResNet stages, or the ViT patch embedding, blocks and final norm) or ``encoder`` (the
  reference code's: ResNet stages or ViT blocks, the adapter not counted and not trained).
* ``full``: every encoder parameter.

Frozen parts of the encoder keep their weights (``requires_grad=False``); their mode is the
recipe's ``frozen_batchnorm``: ``eval`` (this project's: BatchNorm statistics stay as
pretrained) or ``train`` (the reference code's: Lightning keeps the whole model in train
mode, so BatchNorm normalises with batch statistics and updates its running ones).
No unfreezing happens during training (``finetune_function`` does nothing).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn

from spectralearth.names import PROTOCOLS

ADAPTER, ENCODER = "adapter", "encoder"  # first_n_from


def _vit_core(encoder: nn.Module) -> nn.Module | None:
    """The timm VisionTransformer inside a Spec-ViT, found by type (not by attribute name)."""
    from timm.models.vision_transformer import VisionTransformer

    for child in encoder.children():
        if isinstance(child, VisionTransformer):
            return child
    return None


def encoder_stages(encoder: nn.Module, first_n_from: str = ADAPTER) -> list[nn.Module]:
    """The encoder's stages from input to output, the unit of the ``first-n`` protocol.

    ``adapter``: the spectral adapter, then the ResNet stages (or the ViT patch embedding,
    blocks and final norm; or the encoder's other children). ``encoder``: the ResNet stages
    or the ViT blocks only, as the reference code counts them.
    """
    if first_n_from not in (ADAPTER, ENCODER):
        raise ValueError(f"first_n_from must be {ADAPTER!r} or {ENCODER!r}, not {first_n_from!r}")
    adapter = getattr(encoder, "spectral_adapter", None)
    vit = _vit_core(encoder)
    if hasattr(encoder, "resnet"):
        body = [getattr(encoder.resnet, f"layer{i}") for i in range(1, 5)]
    elif vit is not None:
        body = list(vit.blocks)
        if first_n_from == ADAPTER:
            body = [vit.patch_embed, *body, vit.norm]
    else:
        body = [m for m in encoder.children() if m is not adapter]
    if first_n_from == ENCODER:
        return body
    return ([adapter] if adapter is not None else []) + body


def trainable_modules(
    encoder: nn.Module, protocol: str, first_n: int, first_n_from: str = ADAPTER
) -> list[nn.Module]:
    """The encoder modules ``protocol`` trains (raises naming what is missing)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; have {PROTOCOLS}")
    if protocol == "frozen":
        return []
    if protocol == "full":
        return [encoder]
    if protocol == "adapter":
        adapter = getattr(encoder, "spectral_adapter", None)
        if adapter is None:
            raise ValueError("protocol 'adapter' needs an encoder with a spectral adapter")
        return [adapter]
    stages = encoder_stages(encoder, first_n_from)
    if not 1 <= first_n <= len(stages):
        raise ValueError(f"first_n must lie in 1..{len(stages)}, got {first_n}")
    return stages[:first_n]


def set_trainable(
    encoder: nn.Module,
    protocol: str,
    first_n: int,
    first_n_from: str = ADAPTER,
    frozen_batchnorm: str = "eval",
) -> list[nn.Module]:
    """Freeze ``encoder`` except what ``protocol`` trains; returns the trainable modules.

    With ``frozen_batchnorm="eval"`` the frozen modules go to eval mode (the trainable ones
    to train mode); with ``"train"`` every module stays in train mode.
    """
    if frozen_batchnorm not in ("eval", "train"):
        raise ValueError(f"frozen_batchnorm must be 'eval' or 'train', not {frozen_batchnorm!r}")
    trainable = trainable_modules(encoder, protocol, first_n, first_n_from)
    encoder.requires_grad_(False)
    encoder.train(frozen_batchnorm == "train")
    for m in trainable:
        m.requires_grad_(True)
        m.train()
    return trainable


class ProtocolFinetuning(BaseFinetuning):
    """Freezes ``pl_module.encoder`` for ``protocol`` before training (see the module doc);
    a module without an encoder (a head on cached features) is left as it is."""

    def __init__(
        self,
        protocol: str,
        first_n: int = 2,
        first_n_from: str = ADAPTER,
        frozen_batchnorm: str = "eval",
    ) -> None:
        super().__init__()
        self.protocol = protocol
        self.first_n = first_n
        self.first_n_from = first_n_from
        self.frozen_batchnorm = frozen_batchnorm
        self.trainable: list[nn.Module] = []

    def freeze_before_training(self, pl_module) -> None:
        encoder = getattr(pl_module, "encoder", None)
        if encoder is None:
            return
        self.trainable = set_trainable(
            encoder, self.protocol, self.first_n, self.first_n_from, self.frozen_batchnorm
        )
        if self.protocol == "full":
            # a timm ViT keeps cls_token / pos_embed as parameters of its root
            encoder.requires_grad_(True)

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        """Nothing unfreezes during training."""
