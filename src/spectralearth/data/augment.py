"""Batch-wise spatial augmentations for hyperspectral patches (kornia, any band count).

Only geometry and spatial blur: random resized crop, horizontal/vertical flips, Gaussian
blur. There is deliberately no colour or spectral jitter: a pixel's spectrum is the signal
the encoder must learn, so augmentations only move spectra around (or average neighbours).
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn


def blur_kernel_size(crop_size: int) -> int:
    """An odd kernel about 10% of the crop (at least 3 px), as in SimCLR/MoCo-v2."""
    k = max(3, int(round(0.1 * crop_size)))
    return k if k % 2 == 1 else k + 1


class SpatialAugment(nn.Module):
    """[B, C, H, W] -> [B, C, crop, crop]; each sample gets its own random parameters.

    Randomness comes from torch's global generator (seeded by ``lightning.seed_everything``).
    """

    def __init__(
        self,
        crop_size: int,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip_p: float = 0.5,
        vflip_p: float = 0.5,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        super().__init__()
        self.crop_size = int(crop_size)
        ops: list[nn.Module] = [
            K.RandomResizedCrop((self.crop_size, self.crop_size), scale=scale, ratio=ratio),
            K.RandomHorizontalFlip(p=hflip_p),
            K.RandomVerticalFlip(p=vflip_p),
        ]
        if blur_p > 0:
            k = blur_kernel_size(self.crop_size)
            ops.append(K.RandomGaussianBlur((k, k), blur_sigma, p=blur_p, border_type="reflect"))
        self.ops = nn.Sequential(*ops)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected a batch [B, C, H, W], got shape {tuple(x.shape)}")
        return self.ops(x)


def make_augment(crop_size: int, **kwargs) -> SpatialAugment:
    return SpatialAugment(crop_size, **kwargs)
