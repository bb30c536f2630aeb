"""Spec-ViT: the spectral adapter in front of a timm VisionTransformer on 4x4 patches.

``forward_features`` returns the patch tokens as a spatial grid [B, D, H/p, W/p] (class
token dropped, after the final LayerNorm): the SpectralEarth reference's
``get_intermediate_layers(x, n=1, reshape=True, norm=True)[0]``. ``forward`` returns the
pooled embedding (timm's ``global_pool``, by default the class token).
``dynamic_img_size=True`` lets crops smaller than 128 px through.

State dicts are in the reference code's key layout (``spectral_adapter.*``,
``vit_core.*``), so its Spec-ViT weights load strictly and ours load into its classes.
Checkpoints of earlier spectralearth versions (``vit.*``) are read through
:func:`migrate_legacy_keys`, with a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .adapter import ADAPTER_CHANNELS, SpectralAdapter

log = logging.getLogger(__name__)

CORE = "vit_core"  # the timm ViT's attribute (and key prefix), as in the reference code
LEGACY_CORE = "vit"  # its name in spectralearth checkpoints written before the rename


def migrate_legacy_keys(
    state: Mapping[str, Any], prefix: str = "", where: str = "state dict"
) -> tuple[dict[str, Any], int]:
    """``state`` with ``<prefix>vit.*`` keys renamed ``<prefix>vit_core.*`` and the count.

    Only a state dict in the old layout is touched (some ``<prefix>vit.`` key and no
    ``<prefix>vit_core.`` key); anything else comes back as it is, with count 0. A
    migration is logged (a warning naming ``where``) so the user knows the file predates
    the reference layout.
    """
    old, new = f"{prefix}{LEGACY_CORE}.", f"{prefix}{CORE}."
    if not any(k.startswith(old) for k in state) or any(k.startswith(new) for k in state):
        return dict(state), 0
    out: dict[str, Any] = {}
    n = 0
    for key, value in state.items():
        if key.startswith(old):
            key = new + key[len(old) :]
            n += 1
        out[key] = value
    log.warning(
        "%s: %d keys in the layout of earlier spectralearth versions ('%s*') read as '%s*' "
        "(the SpectralEarth reference layout); saving the model again writes the new layout",
        where,
        n,
        old,
        new,
    )
    return out, n


class ViTEncoder(nn.Module):
    """A timm VisionTransformer (``vit_core``, no classifier) with an optional spectral
    adapter in front (``spectral_adapter``)."""

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
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
            mlp_ratio=4.0,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_classes=0,
            dynamic_img_size=True,
        )
        params.update(kwargs)
        self.vit_core = VisionTransformer(**params)
        self.num_features: int = int(self.vit_core.num_features)
        self.register_load_state_dict_pre_hook(_migrate_on_load)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """The spectral adapter (identity without one): [B, C, H, W] -> [B, 128, H, W]."""
        return self.spectral_adapter(x) if self.spectral_adapter is not None else x

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Normalised tokens [B, prefix + h*w, D] and the patch grid size (h, w)."""
        x = self.adapt(x)
        grid = self.vit_core.patch_embed.dynamic_feat_size(tuple(x.shape[-2:]))
        return self.vit_core.forward_features(x), (int(grid[0]), int(grid[1]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, D, H/p, W/p] patch tokens as a feature map (no class token)."""
        tokens, (h, w) = self.forward_tokens(x)
        patches = tokens[:, self.vit_core.num_prefix_tokens :]
        return patches.transpose(1, 2).reshape(patches.shape[0], -1, h, w)

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: int | list[int] | tuple[int, ...] = 1,
        reshape: bool = False,
        return_prefix_tokens: bool = False,
        norm: bool = False,
    ) -> list[torch.Tensor]:
        """timm's (DINO-style) accessor to the outputs of the last ``n`` blocks (or the blocks
        indexed by ``n``), run after the spectral adapter: the reference Spec-ViT's API.
        ``n=1, reshape=True, norm=True`` gives :meth:`forward_features`."""
        return list(
            self.vit_core.get_intermediate_layers(
                self.adapt(x),
                n=n,
                reshape=reshape,
                return_prefix_tokens=return_prefix_tokens,
                norm=norm,
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.forward_tokens(x)
        return self.vit_core.forward_head(tokens)


def _migrate_on_load(module, state_dict, prefix, *_args) -> None:
    """load_state_dict pre-hook: read ``vit.*`` keys of older checkpoints (wherever the
    encoder sits: a downstream model's ``encoder.``, a Lightning module's) as ``vit_core.*``."""
    migrated, n = migrate_legacy_keys(state_dict, prefix, where=f"{type(module).__name__} {prefix}")
    if n:
        state_dict.clear()
        state_dict.update(migrated)
