"""MAE for Spec-ViT: the spectral adapter runs on the whole patch, then 90% of the 4x4
tokens are masked.

Built from lightly's pieces: ``MaskedVisionTransformerTIMM`` (the encoder's own timm ViT,
encoding only the kept tokens), ``MaskedVisionTransformerDecoderTIMM`` (dim 512, depth 1,
fixed sine-cosine positions), ``random_token_mask``, ``patchify``, ``set_at_index`` /
``get_at_index`` and ``normalize_mean_var``.

Target: the input spectrum of each masked token, i.e. its 4 x 4 pixels x C bands of the
(band-normalised, augmented) input, normalised per token (MAE's normalised-pixel loss);
the loss is the MSE over masked tokens only. One view per location (a random date each
epoch); augmentation is random resized crop (scale 0.4-1) and flips (no blur, as MAE).

Defaults are the SpectralEarth reference's (``configs/model/mae.yaml``, ``MAEModule``): mask
ratio 0.9, decoder 512-d with one block of 16 heads, normalised-pixel loss, AdamW with
torch's defaults (betas 0.9, 0.999; weight decay 0.01) and a cosine over the run to 0.
Deviation: no weight decay on norms, biases and tokens (``weight_decay_all_parameters``);
the MAE paper's betas (0.9, 0.95) and weight decay 0.05 are ``adamw_betas`` and
``weight_decay`` of a profile.

Collapse monitoring reads the class token of the visible tokens' encoding (the pooled
embedding of the Spec-ViT, seen through the mask: no extra forward pass).
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

from .. import names
from ..config import PretrainSettings
from ..data.augment import SpatialAugment
from ..names import VIT_BACKBONES
from .base import SSLModule, weight_decay_groups

# where a Spec-ViT keeps its timm VisionTransformer: ``vit_core`` (the reference's key layout;
# checkpoints of the older ``vit`` name are migrated on load by spectralearth.models.vit)
VIT_ATTRIBUTES = ("vit_core",)


def transformer_of(encoder: nn.Module) -> VisionTransformer | None:
    """The timm VisionTransformer inside a Spec-ViT encoder, or None."""
    for name in VIT_ATTRIBUTES:
        vit = getattr(encoder, name, None)
        if isinstance(vit, VisionTransformer):
            return vit
    return None


def _vit_of(encoder: nn.Module) -> VisionTransformer:
    vit = transformer_of(encoder)
    if vit is None:
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
        crop_scale: tuple[float, float] = (0.4, 1.0),
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        lr_schedule: str = names.COSINE_TO_ZERO,
        lr_milestones: tuple[float, ...] = (0.6, 0.8),  # lr_schedule multistep only
        mask_ratio: float = 0.9,
        decoder_dim: int = 512,
        decoder_depth: int = 1,
        decoder_heads: int = 16,
        weight_decay: float = 0.01,
        weight_decay_all_parameters: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
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
        self.augment = SpatialAugment(crop_size, scale=tuple(crop_scale), blur_p=0.0)

    @classmethod
    def from_settings(cls, encoder: nn.Module, settings: PretrainSettings) -> MAE:
        options = {
            "weight_decay": settings.weight_decay,
            "crop_scale": settings.crop_scale,
            "lr_schedule": settings.lr_schedule,
            "lr_milestones": settings.lr_milestones,
            "betas": settings.adamw_betas,
        }
        return cls(
            encoder,
            lr=settings.lr,
            max_steps=settings.steps,
            crop_size=settings.crop_size,
            warmup_steps=settings.warmup_steps,
            warmup_epochs=settings.warmup_epochs,
            mask_ratio=settings.mask_ratio,
            weight_decay_all_parameters=settings.weight_decay_all_parameters,
            **{k: v for k, v in options.items() if v is not None},
        )

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """The spectral adapter over every pixel (before any masking)."""
        adapter = getattr(self.encoder, "spectral_adapter", None)
        return adapter(x) if adapter is not None else x

    def encode_visible(self, x: torch.Tensor, idx_keep: torch.Tensor) -> torch.Tensor:
        """The encoder's (normalised) tokens of the kept positions [B, n_keep, D]."""
        return self.backbone.encode(self.adapt(x), idx_keep=idx_keep)

    def reconstruct(self, x: torch.Tensor, idx_keep: torch.Tensor, idx_mask: torch.Tensor):
        """Predictions for the masked tokens [B, n_masked, patch*patch*C]."""
        return self.decode_masked(self.encode_visible(x, idx_keep), idx_keep, idx_mask)

    def decode_masked(
        self, encoded: torch.Tensor, idx_keep: torch.Tensor, idx_mask: torch.Tensor
    ) -> torch.Tensor:
        b, seq = encoded.shape[0], self.num_prefix + self.grid * self.grid
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
        encoded = self.encode_visible(x, idx_keep)
        # the pooled embedding: the class token (kept first by random_token_mask)
        self.monitor(encoded[:, 0] if self.num_prefix else encoded.mean(dim=1))
        pred = self.decode_masked(encoded, idx_keep, idx_mask)
        target = self.masked_targets(x, idx_mask)
        return nn.functional.mse_loss(pred.float(), target.float())

    def configure_optimizers(self):
        hp = self.hparams
        # every trainable parameter: encoder (adapter + ViT) and decoder
        groups = weight_decay_groups([self], hp.weight_decay, hp.weight_decay_all_parameters)
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        return self.learning_rate_schedule(optimizer)
