"""Spec-ResNet: the spectral adapter in front of a stem-less timm ResNet.

The ResNet stem (7x7 conv, BN, ReLU, max-pool) is removed and the first residual block of
``layer1`` is replaced by one that takes the adapter's 128 channels with stride 2, so the
feature map has output stride 16 relative to the input (2 x 2 x 2 x 2 over the 4 stages).

``dilated=True`` (or :func:`dilate` on a built model) turns every stride into a dilation
for dense heads: output stride 1, the same weights and state-dict keys, so a checkpoint
pretrained at stride 16 loads into the dilated model as it is. As in the SpectralEarth
reference code, the 3x3 convolutions of stage i (1..4) get dilation 2**(i-1).
"""

from __future__ import annotations

import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from .adapter import ADAPTER_CHANNELS, SpectralAdapter

OUTPUT_STRIDE = 16


def _first_block(old: nn.Module) -> nn.Module:
    """A stride-2 block taking the adapter's channels, shaped like ``old`` at its output."""
    if isinstance(old, Bottleneck):
        out = old.conv3.out_channels  # 256 for resnet50
        planes = out // Bottleneck.expansion
        # base_width makes every conv of the block ``out`` wide: 1x1 128->256,
        # 3x3 256->256 stride 2, 1x1 256->256 (the SpectralEarth Spec-ResNet50 block).
        block_kwargs = {"base_width": 64 * out // planes}
        block_cls: type[nn.Module] = Bottleneck
    elif isinstance(old, BasicBlock):
        out = old.conv2.out_channels  # 64 for resnet18/34
        planes = out
        block_kwargs = {}
        block_cls = BasicBlock
    else:  # pragma: no cover - only timm ResNets are registered
        raise TypeError(f"unsupported residual block {type(old).__name__}")
    downsample = nn.Sequential(
        nn.Conv2d(ADAPTER_CHANNELS, out, kernel_size=1, stride=2, bias=False),
        nn.BatchNorm2d(out),
    )
    block = block_cls(ADAPTER_CHANNELS, planes, stride=2, downsample=downsample, **block_kwargs)
    # Same initialisation as timm's ResNet.init_weights (kaiming convs, zero last BN gamma).
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    block.zero_init_last()
    return block


class SpecResNet(nn.Module):
    """Spectral adapter + timm ResNet without stem; ``arch`` is a timm ResNet name."""

    def __init__(
        self, arch: str = "resnet50", in_chans: int = 202, dilated: bool = False, **kwargs
    ) -> None:
        super().__init__()
        SpectralAdapter.check_bands(in_chans)
        self.in_chans = in_chans
        self.arch = arch
        self.output_stride = OUTPUT_STRIDE
        self.spectral_adapter = SpectralAdapter()
        kwargs.setdefault("num_classes", 0)
        net = timm.create_model(arch, pretrained=False, **kwargs)
        net.conv1 = nn.Identity()
        net.bn1 = nn.Identity()
        net.act1 = nn.Identity()
        net.maxpool = nn.Identity()
        net.layer1[0] = _first_block(net.layer1[0])
        self.resnet = net
        self.num_features: int = int(net.num_features)
        if dilated:
            dilate(self)

    @property
    def dilated(self) -> bool:
        return self.output_stride == 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, num_features, H/16, W/16] (H x W when dilated)."""
        return self.resnet.forward_features(self.spectral_adapter(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Global average pooling (plus timm's head, Identity when num_classes=0)."""
        return self.resnet.forward_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def dilate(encoder: nn.Module) -> nn.Module:
    """Make a :class:`SpecResNet` dense (output stride 1) in place and return it.

    Every strided convolution (the 3x3 of a block and its 1x1 downsample) gets stride 1, and
    the 3x3 convolutions of stage i get dilation (and padding) 2**(i-1). Only strides,
    dilations and paddings change: the weights stay, so this can follow loading a checkpoint.
    """
    if not isinstance(encoder, SpecResNet):
        raise TypeError(
            f"only Spec-ResNets can be dilated for a dense head, not {type(encoder).__name__}"
        )
    if encoder.dilated:
        return encoder
    for i in range(1, 5):
        d = 2 ** (i - 1)
        for block in getattr(encoder.resnet, f"layer{i}"):
            # Bottleneck: conv2 is the 3x3 that strides; BasicBlock: conv1 strides, both 3x3
            convs = [block.conv2] if isinstance(block, Bottleneck) else [block.conv1, block.conv2]
            for conv in convs:
                conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    encoder.output_stride = 1
    return encoder
