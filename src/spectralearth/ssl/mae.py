"""MAE for Spec-ViT: the spectral adapter runs on the whole patch, then 90% of the 4x4
tokens are masked.

Built from lightly's pieces: ``MaskedVisionTransformerTIMM`` (the encoder's own timm ViT,
encoding only the kept tokens), ``MaskedVisionTransformerDecoderTIMM`` (dim 512, depth 1,
fixed sine-cosine positions), ``random_token_mask``, ``patchify``, ``set_at_index`` /
``get_at_index`` and ``normalize_mean_var``.

Target: the input spectrum of each masked token, i.e. its 4 x 4 pixels x C bands of the
(band-normalised, augmented) input, normalised per token (MAE's normalised-pixel loss);
the loss is the MSE over masked tokens only. One view per location (a random date each
epoch); augmentation is random resized crop and flips (no blur, as MAE).
"""

from __future__ import annotations

import torch
from lightly.models import utils
from lightly.models.modules import (
    MaskedVisionTransformerDecoderTIMM,
    MaskedVisionTransformerTIMM,
)
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..config import PretrainSettings
from ..data.augment import SpatialAugment
from ..names import VIT_BACKBONES
from .base import SSLModule, warmup_cosine


def _vit_of(encoder: nn.Module) -> VisionTransformer:
    vit = getattr(encoder, "vit_core", None)
    if not isinstance(vit, VisionTransformer):
        name = getattr(encoder, "model_name", type(encoder).__name__)
        raise ValueError(
            f"MAE needs a Vision Transformer backbone ({', '.join(VIT_BACKBONES)}); "
            f"{name!r} is not one: masking drops tokens, which a convolutional network has "
            "none of. Use --method moco or dino with it."
        )
    return vit


class MAE(SSLModule):
    """Masked autoencoder on a :class:`~spectralearth.models.vit.ViTEncoder`.

    Batches are [B, C, P, P] tensors (``ShardPatches(per_location=True)``). The trained
    encoder (adapter + ViT) is ``self.encoder``; ``self.backbone`` wraps the same ViT.
    """

    name = "mae"
    two_views = False

    def __init__(
        self,
        encoder: nn.Module,
        *,
        lr: float = 1e-4,
        max_steps: int = 1000,
        crop_size: int = 128,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        mask_ratio: float = 0.9,
        decoder_dim: int = 512,
        decoder_depth: int = 1,
        decoder_heads: int = 16,
        weight_decay: float = 0.05,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        vit = _vit_of(encoder)
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        patch = int(encoder.patch_size)
        if crop_size % patch:
            raise ValueError(f"MAE: crop_size {crop_size} is not a multiple of the patch {patch}")
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.patch_size = patch
        self.in_chans = int(encoder.in_chans)
        self.grid = crop_size // patch
        # Wraps (and MAE-initialises: xavier, fixed sine-cosine positions) the encoder's ViT.
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        # Tokens are dropped (idx_keep), never replaced in the encoder: its mask token
        # stays out of training (and out of DDP's gradient buckets).
        self.backbone.mask_token.requires_grad_(False)
        self.num_prefix = int(vit.num_prefix_tokens)
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=self.grid * self.grid,
            embed_dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_heads,
            num_prefix_tokens=self.num_prefix,
        )
        self.decoder_pred = nn.Linear(decoder_dim, patch * patch * self.in_chans)
        self.augment = SpatialAugment(crop_size, blur_p=0.0)

    @classmethod
    def from_settings(cls, encoder: nn.Module, settings: PretrainSettings) -> MAE:
        return cls(
            encoder,
            lr=settings.lr,
            max_steps=settings.steps,
            crop_size=settings.crop_size,
            warmup_steps=settings.warmup_steps,
            warmup_epochs=settings.warmup_epochs,
            mask_ratio=settings.mask_ratio,
            **({} if settings.weight_decay is None else {"weight_decay": settings.weight_decay}),
        )

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """The spectral adapter over every pixel (before any masking)."""
        adapter = getattr(self.encoder, "spectral_adapter", None)
        return adapter(x) if adapter is not None else x

    def reconstruct(self, x: torch.Tensor, idx_keep: torch.Tensor, idx_mask: torch.Tensor):
        """Predictions for the masked tokens [B, n_masked, patch*patch*C]."""
        encoded = self.backbone.encode(self.adapt(x), idx_keep=idx_keep)
        b, seq = x.shape[0], self.num_prefix + self.grid * self.grid
        tokens = utils.repeat_token(self.decoder.mask_token, (b, seq))
        tokens = utils.set_at_index(tokens, idx_keep, self.decoder_embed(encoded).type_as(tokens))
        decoded = self.decoder.decode(self.decoder.add_pos_embed(tokens))
        return self.decoder_pred(utils.get_at_index(decoded, idx_mask))

    def masked_targets(self, x: torch.Tensor, idx_mask: torch.Tensor) -> torch.Tensor:
        """Each masked token's input spectra (patch x patch pixels x C bands), normalised."""
        patches = utils.patchify(x, self.patch_size)  # [B, grid*grid, patch*patch*C]
        target = utils.get_at_index(patches, idx_mask - self.num_prefix)
        return utils.normalize_mean_var(target) if self.hparams.norm_pix_loss else target

    def training_loss(self, batch) -> torch.Tensor:
        x = self.augment(self.prepare(batch))
        if x.shape[-1] != self.grid * self.patch_size or x.shape[-2] != x.shape[-1]:
            raise ValueError(f"MAE expects {self.hparams.crop_size} px crops, got {x.shape}")
        seq = self.num_prefix + self.grid * self.grid
        idx_keep, idx_mask = utils.random_token_mask(
            size=(x.shape[0], seq), mask_ratio=self.hparams.mask_ratio, device=x.device
        )
        pred = self.reconstruct(x, idx_keep, idx_mask)
        target = self.masked_targets(x, idx_mask)
        return nn.functional.mse_loss(pred.float(), target.float())

    def configure_optimizers(self):
        params = [p for n, p in self.named_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=self.hparams.lr, betas=(0.9, 0.95), weight_decay=self.hparams.weight_decay
        )
        total, warmup = self.schedule_lengths(self.hparams.warmup_steps, self.hparams.warmup_epochs)
        return self.step_scheduler(optimizer, lambda step: warmup_cosine(step, total, warmup))
