"""A compact 2D U-Net for ``softseg compare``.

Ours rather than MONAI's ``BasicUNet``: MONAI is a test-only dependency of softseg, and the comparison
needs nothing beyond a few dozen lines (two down/up levels, batch norm, ReLU), which keeps the command
light to install and fast on two CPU cores.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CompactUNet(nn.Module):
    r"""U-Net with ``depth`` pooling levels; channels double at each level, starting from ``width``.

    logits = head(decoder(encoder(image))), with skip connections concatenated at every level.

    Convention:
        - ``forward(image)``: (B, ``in_channels``, H, W) float, H and W divisible by 2 ** ``depth``;
          returns logits (B, ``num_classes``, H, W), no activation applied.
        - Options are keyword-only; ``depth`` >= 1, ``width`` >= 1.

    Example:
        >>> net = CompactUNet(in_channels=1, num_classes=3, width=4, depth=2)
        >>> net(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, *, in_channels: int, num_classes: int, width: int = 16, depth: int = 2) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("width", width),
            ("depth", depth),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        self.depth = depth
        channels = [width * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList([_double_conv(in_channels, channels[0])])
        self.encoders.extend(_double_conv(channels[i], channels[i + 1]) for i in range(depth))
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.decoders = nn.ModuleList(_double_conv(2 * channels[i], channels[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, image: Tensor) -> Tensor:
        factor = 2**self.depth
        if image.ndim != 4 or image.shape[-1] % factor or image.shape[-2] % factor:
            raise ValueError(
                f"image must have shape (B, C, H, W) with H and W divisible by {factor}; got {tuple(image.shape)}"
            )
        skips = []
        features = image
        for level, encoder in enumerate(self.encoders):
            if level:
                features = nn.functional.max_pool2d(features, 2)
            features = encoder(features)
            skips.append(features)
        skips.pop()  # the bottleneck is not a skip connection
        for upsample, decoder in zip(self.upsamplers, self.decoders, strict=True):
            features = decoder(torch.cat([skips.pop(), upsample(features)], 1))
        return self.head(features)
