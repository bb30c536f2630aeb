"""Training-batch augmentation of the paper recipe (kornia, on the batch's device).

As the SpectralEarth reference datamodules: ``RandomResizedCrop`` to the patch's own size
with the task's scale range (0.2-1 for CDL and NLCD, 0.6-1 for CORINE, 0.4-1 otherwise),
then a vertical and a horizontal flip, each with probability 0.5; masks follow the image
with nearest-neighbour resampling (the ignore index survives). Validation and test batches
are not augmented. The reference resizes every patch to 128 px first (a no-op on its
128 px patches); here patches keep their size. Random draws come from torch's global RNG
(seeded per evaluation).
"""

from __future__ import annotations

import torch
from torch import nn


class CropFlip(nn.Module):
    """``forward(images, masks=None)`` -> augmented ``images`` (and ``masks`` ``[B, H, W]``)."""

    def __init__(self, scale: tuple[float, float] = (0.4, 1.0)) -> None:
        super().__init__()
        self.scale = (float(scale[0]), float(scale[1]))
        self._pipelines: dict[tuple[tuple[int, int], bool], nn.Module] = {}

    def _pipeline(self, size: tuple[int, int], with_mask: bool) -> nn.Module:
        key = (size, with_mask)
        if key not in self._pipelines:
            import kornia.augmentation as K
            from kornia.constants import DataKey, Resample

            extra = {DataKey.MASK: {"resample": Resample.NEAREST, "align_corners": None}}
            self._pipelines[key] = K.AugmentationSequential(
                K.RandomResizedCrop(size, scale=self.scale),
                K.RandomVerticalFlip(p=0.5),
                K.RandomHorizontalFlip(p=0.5),
                data_keys=["input", "mask"] if with_mask else ["input"],
                extra_args=extra if with_mask else {},
            )
        return self._pipelines[key]

    def forward(
        self, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if masks is None:
            return self._pipeline(size, False)(images)
        out, out_masks = self._pipeline(size, True)(images, masks[:, None].float())
        return out, out_masks[:, 0].round().to(masks.dtype)
