"""The SpectralEarth spectral adapter: 1D convolutions along the band axis.

It maps any hyperspectral cube with at least :data:`MIN_BANDS` bands to 128 feature
channels at full spatial resolution, so one encoder serves sensors with different band
counts (EnMAP 202, DESIS 235, HySpex ...). Spatial pixels are never mixed.
"""

from __future__ import annotations

import torch
from torch import nn

ADAPTER_CHANNELS = 128

# (kernel, stride, padding) of the three spectral convolutions, in order.
_SPECTRAL_CONVS: tuple[tuple[int, int, int], ...] = ((7, 5, 1), (7, 5, 1), (5, 3, 1))


def spectral_length(n_bands: int) -> int:
    """Length of the spectral axis after the three convolutions (<= 0: too few bands)."""
    length = n_bands
    for kernel, stride, pad in _SPECTRAL_CONVS:
        span = length + 2 * pad - kernel
        if span < 0:
            return 0
        length = span // stride + 1
    return length


def _min_bands() -> int:
    n = 1
    while spectral_length(n) < 1:
        n += 1
    return n


MIN_BANDS = _min_bands()  # 75 for the kernels above


class SpectralAdapter(nn.Sequential):
    """[B, C, H, W] -> [B, 128, H, W] with three Conv3d-BN-ReLU blocks over the band axis.

    56,192 parameters whatever C is; C must be at least :data:`MIN_BANDS` (75). The layers
    are indexed 0-9 like the reference implementation, so its adapter weights load as-is.
    """

    out_channels = ADAPTER_CHANNELS
    min_bands = MIN_BANDS

    def __init__(self) -> None:
        layers: list[nn.Module] = []
        channels = (1, 32, 64, ADAPTER_CHANNELS)
        for (kernel, stride, pad), cin, cout in zip(
            _SPECTRAL_CONVS, channels[:-1], channels[1:], strict=True
        ):
            layers += [
                nn.Conv3d(cin, cout, (kernel, 1, 1), stride=(stride, 1, 1), padding=(pad, 0, 0)),
                nn.BatchNorm3d(cout),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers, nn.AdaptiveAvgPool3d((1, None, None)))

    @staticmethod
    def check_bands(n_bands: int) -> None:
        if n_bands < MIN_BANDS:
            raise ValueError(
                f"SpectralAdapter needs at least {MIN_BANDS} spectral bands (three strided "
                f"convolutions along the band axis, kernel/stride/padding {_SPECTRAL_CONVS}, "
                f"must leave at least one band); got {n_bands}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"SpectralAdapter expects [B, C, H, W], got shape {tuple(x.shape)}")
        self.check_bands(x.shape[1])
        return super().forward(x.unsqueeze(1)).squeeze(2)  # [B,1,C,H,W] -> [B,128,H,W]
