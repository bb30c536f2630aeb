"""Spec-ViT: the spectral adapter in front of a timm VisionTransformer on 4x4 patches.

``forward_features`` returns the patch tokens as a spatial grid [B, D, H/p, W/p] (class
token dropped); ``forward`` returns the pooled embedding (timm's ``global_pool``, by
default the class token). ``dynamic_img_size=True`` lets crops smaller than 128 px through.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .adapter import ADAPTER_CHANNELS, SpectralAdapter


class ViTEncoder(nn.Module):
    """A timm VisionTransformer (no classifier) with an optional spectral adapter in front."""

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        in_chans: int = 202,
        patch_size: int = 4,
        img_size: int = 128,
        spectral_adapter: bool = True,
        **kwargs,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.patch_size = patch_size
        if spectral_adapter:
            SpectralAdapter.check_bands(in_chans)
            self.spectral_adapter: nn.Module | None = SpectralAdapter()
            vit_in = ADAPTER_CHANNELS
        else:
            self.spectral_adapter = None
            vit_in = in_chans
        params = dict(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=vit_in,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_classes=0,
            dynamic_img_size=True,
        )
        params.update(kwargs)
        self.vit = VisionTransformer(**params)
        self.num_features: int = int(self.vit.num_features)

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Normalised tokens [B, prefix + h*w, D] and the patch grid size (h, w)."""
        if self.spectral_adapter is not None:
            x = self.spectral_adapter(x)
        grid = self.vit.patch_embed.dynamic_feat_size(tuple(x.shape[-2:]))
        return self.vit.forward_features(x), (int(grid[0]), int(grid[1]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, D, H/p, W/p] patch tokens as a feature map (no class token)."""
        tokens, (h, w) = self.forward_tokens(x)
        patches = tokens[:, self.vit.num_prefix_tokens :]
        return patches.transpose(1, 2).reshape(patches.shape[0], -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.forward_tokens(x)
        return self.vit.forward_head(tokens)
