"""Batch-wise spatial augmentations for hyperspectral patches (kornia, any band count).

Only geometry and spatial blur: random resized crop, horizontal/vertical flips, Gaussian
blur. There is deliberately no colour or spectral jitter: a pixel's spectrum is the signal
the encoder must learn, so augmentations only move spectra around (or average neighbours).
This is the SpectralEarth reference's pipeline (``moco_augmentations``, DINO's global
views, MAE's crop and flips); the crop scale is each method's (``crop_scale``).
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn


def blur_kernel_size(crop_size: int) -> int:
    """An odd kernel about 10% of the crop, as in SimCLR/MoCo-v2 and the reference code
    (``size // 10 // 2 * 2 + 1``: 13 px for 128 px crops; 1 px, i.e. no blur, under 20 px)."""
    return int(crop_size) // 10 // 2 * 2 + 1


class SpatialAugment(nn.Module):
    """[B, C, H, W] -> [B, C, crop, crop]; each sample gets its own random parameters.

    ``scale`` is the range of the crop's area as a fraction of the patch (torchvision's and
    kornia's default, 0.08-1, is the reference MoCo's). Randomness comes from torch's global
    generator (seeded by ``lightning.seed_everything``).
    """

    def __init__(
        self,
        crop_size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip_p: float = 0.5,
        vflip_p: float = 0.5,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        super().__init__()
        self.crop_size = int(crop_size)
        self.scale = (float(scale[0]), float(scale[1]))
        ops: list[nn.Module] = [
            K.RandomResizedCrop((self.crop_size, self.crop_size), scale=scale, ratio=ratio),
            K.RandomHorizontalFlip(p=hflip_p),
            K.RandomVerticalFlip(p=vflip_p),
        ]
        k = blur_kernel_size(self.crop_size)
        if blur_p > 0 and k > 1:  # a 1 px Gaussian is the identity
            ops.append(K.RandomGaussianBlur((k, k), blur_sigma, p=blur_p, border_type="reflect"))
        self.ops = nn.Sequential(*ops)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected a batch [B, C, H, W], got shape {tuple(x.shape)}")
        return self.ops(x)
