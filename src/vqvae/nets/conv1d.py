"""Convolutional encoder/decoder for audio and other sequences, (B, C, T) <-> (B, D, T / d).

Encoder: a 7-tap input convolution, then ``log2(downsample)`` levels of [residual units, strided
4-tap convolution (stride 2)], each halving the time axis and doubling the channels up to
``hidden``, then residual units and a 3-tap projection to the code dimension D. The decoder
mirrors it with transposed convolutions. The residual units are dilated (dilation 1, 3, 9, ...
within a stack, as in WaveNet-style vocoders) so the receptive field grows quickly at little cost.
Channels grow as time shrinks, so every level costs about the same — the full-rate layers, which
see the most samples, are the narrowest.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

MIN_WIDTH = 16


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class ResidualUnit1d(nn.Module):
    """x + conv1×1(act(conv3(act(x), dilation)))."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _act(),
            nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation),
            _act(),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def residual_stack1d(channels: int, units: int) -> nn.Sequential:
    """``units`` residual units with dilations 1, 3, 9, ... (length-preserving)."""
    return nn.Sequential(*(ResidualUnit1d(channels, 3**i) for i in range(units)))


def halvings(downsample: int) -> int:
    """log2(downsample) for a power of two >= 2 (a ValueError otherwise)."""
    n = int(math.log2(downsample)) if downsample >= 2 else 0
    if downsample < 2 or 2**n != downsample:
        raise ValueError(f"downsample must be a power of two >= 2, got {downsample}")
    return n


def level_widths(hidden: int, downsample: int) -> list[int]:
    """Channels at each time resolution, full rate first: hidden / 2^(n - i), at least 16."""
    n = halvings(downsample)
    return [max(hidden >> (n - i), min(MIN_WIDTH, hidden)) for i in range(n + 1)]


class Encoder1d(nn.Module):
    """(B, C, T) -> (B, D, T / downsample); T must be divisible by ``downsample``."""

    def __init__(
        self, in_channels: int, hidden: int, res_blocks: int, out_dim: int, downsample: int
    ) -> None:
        super().__init__()
        widths = level_widths(hidden, downsample)
        layers: list[nn.Module] = [nn.Conv1d(in_channels, widths[0], 7, padding=3)]
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                residual_stack1d(cin, res_blocks),
                _act(),
                nn.Conv1d(cin, cout, 4, stride=2, padding=1),  # T -> T / 2
            ]
        layers += [residual_stack1d(hidden, res_blocks), _act()]
        self.body = nn.Sequential(*layers)
        self.to_code = nn.Conv1d(hidden, out_dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.to_code(self.body(x))


class Decoder1d(nn.Module):
    """(B, D, t) -> (B, C, t · upsample), unbounded outputs."""

    def __init__(
        self, in_dim: int, hidden: int, res_blocks: int, out_channels: int, upsample: int
    ) -> None:
        super().__init__()
        widths = level_widths(hidden, upsample)[::-1]  # coarsest first
        layers: list[nn.Module] = [
            nn.Conv1d(in_dim, hidden, 3, padding=1),
            residual_stack1d(hidden, res_blocks),
        ]
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                _act(),
                nn.ConvTranspose1d(cin, cout, 4, stride=2, padding=1),  # t -> 2t
                residual_stack1d(cout, res_blocks),
            ]
        layers += [_act(), nn.Conv1d(widths[-1], out_channels, 7, padding=3)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z)
