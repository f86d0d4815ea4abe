"""Convolutional encoder/decoder for audio and other sequences, (B, C, T) <-> (B, D, T / d).

Encoder: a 7-tap input convolution, then ``log2(downsample)`` levels of [residual units, strided
4-tap convolution (stride 2)], each halving the time axis and doubling the channels up to
``hidden``, then residual units and a 3-tap projection to the code dimension D. The decoder
mirrors it with transposed convolutions. The residual units are dilated (dilation 1, 3, 9, ...
within a stack, as in WaveNet-style vocoders) so the receptive field grows quickly at little cost.
Channels grow as time shrinks, so every level costs about the same — the full-rate layers, which
see the most samples, are the narrowest.

``causal=True`` builds the same layers (same parameter names and shapes) padded on the left only
(``CausalConv1d``, ``CausalConvTranspose1d``): encoder output t depends on the inputs before
(t + 1)·downsample, decoder output n on the codes up to n // upsample. Such a network also runs
chunk by chunk (``stream``), each causal layer carrying its last input frames to the next chunk,
and the chunks' outputs are the offline pass's, cut into the same pieces.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_WIDTH = 16


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


# A layer's past: the input frames it needs before a chunk, ``state[layer]`` (B, C, context).
StreamState = dict[nn.Module, Tensor]


def _with_past(layer: CausalConv1d | CausalConvTranspose1d, x: Tensor, state: StreamState):
    """(B, C, t) -> (B, C, context + t): the chunk after the layer's last ``context`` input
    frames (zeros before the first chunk, as offline); those of this chunk go to ``state``."""
    past = state.get(layer)
    if past is None:
        past = x.new_zeros(*x.shape[:-1], layer.context)
    full = torch.cat([past, x], -1)
    state[layer] = full[..., full.shape[-1] - layer.context :]
    return full


class CausalConv1d(nn.Conv1d):
    """A convolution padded on the left only, by ``context = (k - 1)·dilation + 1 - stride``
    frames: output t depends on inputs < (t + 1)·stride, and T inputs give T / stride outputs
    (T divisible by ``stride``)."""

    def __init__(
        self, cin: int, cout: int, kernel_size: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__(cin, cout, kernel_size, stride=stride, dilation=dilation)
        self.context = (kernel_size - 1) * dilation + 1 - stride

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.context, 0)))

    def stream(self, x: Tensor, state: StreamState) -> Tensor:
        return super().forward(_with_past(self, x, state))


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Upsampling by ``stride`` where output n depends on inputs <= n // stride.

    Input frame i spreads over outputs [i·s, i·s + k); the outputs of a chunk's frames that
    reach into the next chunk's span are not emitted: the next chunk recomputes them with the
    last ``context = ceil((k - s) / s)`` input frames put before it (zeros before the first,
    which add nothing), and the outputs of those frames' own span are cut off."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int) -> None:
        super().__init__(cin, cout, kernel_size, stride=stride)
        self.context = -(-(kernel_size - stride) // stride)

    def _emitted(self, y: Tensor, frames: int) -> Tensor:
        start = self.context * self.stride[0]  # the past frames' own span
        return y[..., start : start + frames * self.stride[0]]  # (B, C, t·s)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override] - no output_size
        return self._emitted(super().forward(F.pad(x, (self.context, 0))), x.shape[-1])

    def stream(self, x: Tensor, state: StreamState) -> Tensor:
        return self._emitted(super().forward(_with_past(self, x, state)), x.shape[-1])


def conv1d(
    cin: int, cout: int, kernel_size: int, *, stride: int = 1, dilation: int = 1, causal: bool
) -> nn.Conv1d:
    """T -> T / stride: centred padding, or all of it on the left (``CausalConv1d``)."""
    if causal:
        return CausalConv1d(cin, cout, kernel_size, stride, dilation)
    pad = ((kernel_size - 1) * dilation + 1 - stride) // 2
    return nn.Conv1d(cin, cout, kernel_size, stride=stride, dilation=dilation, padding=pad)


def stream(module: nn.Module, x: Tensor, state: StreamState) -> Tensor:
    """One chunk (B, C, t) through ``module``, built of causal layers, pointwise layers and
    sequences of them: each causal layer reads and updates its past in ``state``."""
    if isinstance(module, nn.Sequential):
        for layer in module:
            x = stream(layer, x, state)
        return x
    if hasattr(module, "stream"):  # causal layers, residual units, Encoder1d, Decoder1d
        return module.stream(x, state)
    pointwise = isinstance(module, nn.LeakyReLU) or (
        type(module) is nn.Conv1d and module.kernel_size == (1,) and module.stride == (1,)
    )
    if not pointwise:
        raise TypeError(f"{type(module).__name__} is not causal: it cannot run chunk by chunk")
    return module(x)


class ResidualUnit1d(nn.Module):
    """x + conv1×1(act(conv3(act(x), dilation)))."""

    def __init__(self, channels: int, dilation: int, causal: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _act(),
            conv1d(channels, channels, 3, dilation=dilation, causal=causal),
            _act(),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)

    def stream(self, x: Tensor, state: StreamState) -> Tensor:
        return x + stream(self.body, x, state)


def residual_stack1d(channels: int, units: int, causal: bool = False) -> nn.Sequential:
    """``units`` residual units with dilations 1, 3, 9, ... (length-preserving)."""
    return nn.Sequential(*(ResidualUnit1d(channels, 3**i, causal) for i in range(units)))


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
        self,
        in_channels: int,
        hidden: int,
        res_blocks: int,
        out_dim: int,
        downsample: int,
        causal: bool = False,
    ) -> None:
        super().__init__()
        widths = level_widths(hidden, downsample)
        layers: list[nn.Module] = [conv1d(in_channels, widths[0], 7, causal=causal)]
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                residual_stack1d(cin, res_blocks, causal),
                _act(),
                conv1d(cin, cout, 4, stride=2, causal=causal),  # T -> T / 2
            ]
        layers += [residual_stack1d(hidden, res_blocks, causal), _act()]
        self.body = nn.Sequential(*layers)
        self.to_code = conv1d(hidden, out_dim, 3, causal=causal)

    def forward(self, x: Tensor) -> Tensor:
        return self.to_code(self.body(x))

    def stream(self, x: Tensor, state: StreamState) -> Tensor:
        return stream(self.to_code, stream(self.body, x, state), state)


class Decoder1d(nn.Module):
    """(B, D, t) -> (B, C, t · upsample), unbounded outputs."""

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        res_blocks: int,
        out_channels: int,
        upsample: int,
        causal: bool = False,
    ) -> None:
        super().__init__()
        widths = level_widths(hidden, upsample)[::-1]  # coarsest first
        layers: list[nn.Module] = [
            conv1d(in_dim, hidden, 3, causal=causal),
            residual_stack1d(hidden, res_blocks, causal),
        ]
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            up = (
                CausalConvTranspose1d(cin, cout, 4, stride=2)
                if causal
                else nn.ConvTranspose1d(cin, cout, 4, stride=2, padding=1)
            )
            layers += [_act(), up, residual_stack1d(cout, res_blocks, causal)]  # t -> 2t
        layers += [_act(), conv1d(widths[-1], out_channels, 7, causal=causal)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z)

    def stream(self, z: Tensor, state: StreamState) -> Tensor:
        return stream(self.body, z, state)
