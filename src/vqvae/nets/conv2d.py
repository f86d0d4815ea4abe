"""Convolutional encoder/decoder for images (the VQ-VAE paper's architecture, sec. 4.1).

Encoder: ``log2(downsample)`` strided 4×4 convolutions (each halves H and W), a 3×3 conv, a stack
of residual blocks (ReLU, 3×3 conv, ReLU, 1×1 conv), and a 1×1 projection to the code dimension D.
The decoder mirrors it with transposed convolutions.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


class ResidualStack(nn.Module):
    def __init__(self, channels: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(channels, hidden, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden, channels, 1),
            )
            for _ in range(blocks)
        )
        self.out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return self.out(x)


def _halvings(downsample: int) -> int:
    n = int(math.log2(downsample))
    if downsample < 2 or 2**n != downsample:
        raise ValueError(f"downsample must be a power of two >= 2, got {downsample}")
    return n


class Encoder2d(nn.Module):
    """(B, C, H, W) -> (B, D, H / downsample, W / downsample)."""

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        res_blocks: int,
        res_hidden: int,
        out_dim: int,
        downsample: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        n = _halvings(downsample)
        channels = in_channels
        for i in range(n):
            width = hidden if i == n - 1 else hidden // 2
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.ReLU()]
            channels = width
        layers += [nn.Conv2d(channels, hidden, 3, padding=1)]
        self.body = nn.Sequential(*layers, ResidualStack(hidden, res_hidden, res_blocks))
        self.to_code = nn.Conv2d(hidden, out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.to_code(self.body(x))


class Decoder2d(nn.Module):
    """(B, D, h, w) -> (B, C, h·upsample, w·upsample), unbounded outputs (values or logits)."""

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        res_blocks: int,
        res_hidden: int,
        out_channels: int,
        upsample: int,
    ) -> None:
        super().__init__()
        n = _halvings(upsample)
        layers: list[nn.Module] = [
            nn.Conv2d(in_dim, hidden, 3, padding=1),
            ResidualStack(hidden, res_hidden, res_blocks),
        ]
        channels = hidden
        for i in range(n):
            last = i == n - 1
            width = out_channels if last else hidden // 2
            layers.append(nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            channels = width
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z)
