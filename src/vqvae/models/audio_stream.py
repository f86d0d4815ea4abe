"""Streaming a causal audio VQ-VAE (``model.causal = true``): samples -> codes and codes ->
samples, one chunk at a time, with state carried between chunks.

    encoder, decoder = model.stream_encoder(), model.stream_decoder()
    for chunk in chunks:                  # (B, C, n·hop) samples, any n >= 1 per chunk
        codes = encoder.push(chunk)       # (B, n), as model.encode gives for these samples
        out = decoder.push(codes)         # (B, C, n·hop), as model.decode_indices gives

hop = ``model.config.downsample`` samples. Every convolution is causal (``vqvae.nets.conv1d``):
each keeps its last input frames as the state of the stream (``nets.conv1d.stream``), starting
from the zeros the offline pass pads with, so the chunked pass computes what the offline one
computes, to float rounding: the convolution kernels sum in another order on other lengths, so
z_e and the output agree to about 1e-7 in float32, and the codes are the offline codes unless
two codes tie to that precision (then either is a nearest code, as ``quantizers.core`` says of
ONNX export; ``benchmarks/streaming_speed.py`` counts such codes on real clips).

Algorithmic latency: a code depends on the samples up to the end of its hop and on none after
(no lookahead), and the decoder turns it into its hop of samples at once, so the first sample
of a hop comes out ``model.latency_samples`` = one hop after it went in (2 ms for 16x at 8 kHz);
chunks of n hops wait for n hops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vqvae.errors import ConfigError
from vqvae.nets.conv1d import StreamState, stream
from vqvae.nets.modes import eval_mode

if TYPE_CHECKING:
    from vqvae.models.audio import AudioVQVAE


def _causal(model: AudioVQVAE) -> AudioVQVAE:
    if not model.config.causal:
        raise ConfigError(
            "streaming needs a causal model (model.causal = true); this one has "
            "model.causal = false, whose convolutions look ahead"
        )
    return model


class StreamEncoder:
    """Samples in, codes out (see the module docstring). ``push`` takes (B, C, n·hop) (or
    (B, n·hop) for mono) and returns the chunk's n codes (B, n), or (B, L, n) for a residual
    quantizer."""

    def __init__(self, model: AudioVQVAE) -> None:
        self.model = _causal(model)
        self.state: StreamState = {}

    @torch.no_grad()
    def push(self, samples: Tensor) -> Tensor:
        x = self.model._check_signal(samples)  # (B, C, n·hop)
        z = stream(self.model.encoder, x, self.state)  # (B, D, n)
        with eval_mode(self.model.quantizer):  # codebooks are not updated
            return self.model.quantizer(z).indices


class StreamDecoder:
    """Codes in, samples out (see the module docstring). ``push`` takes (B, n) codes (or
    (B, L, n) for a residual quantizer), n >= 1, and returns (B, C, n·hop)."""

    def __init__(self, model: AudioVQVAE) -> None:
        self.model = _causal(model)
        self.state: StreamState = {}

    @torch.no_grad()
    def push(self, indices: Tensor) -> Tensor:
        dims = 3 if self.model.quantizer.index_levels else 2
        if indices.dim() != dims or indices.shape[-1] == 0:
            raise ValueError(
                f"expected a chunk of {dims}-dimensional indices with >= 1 code, got shape "
                f"{tuple(indices.shape)}"
            )
        z = self.model.quantizer.lookup(indices)  # (B, D, n)
        return stream(self.model.decoder, z, self.state)


def check_hops(hops: int) -> int:
    """A chunk size in hops (``vqvae compress/decompress --chunk``): an integer >= 1."""
    if isinstance(hops, bool) or not isinstance(hops, int) or hops < 1:
        raise ConfigError(f"--chunk must be an integer >= 1 (hops), got {hops!r}")
    return hops


def encode_in_chunks(model: AudioVQVAE, x: Tensor, hops: int) -> Tensor:
    """``model.encode(x)`` computed by a ``StreamEncoder`` fed ``hops`` hops at a time (the
    last chunk may be shorter)."""
    step = check_hops(hops) * model.config.downsample
    encoder = model.stream_encoder()
    starts = range(0, max(x.shape[-1], 1), step)  # no samples: push says what it expected
    return torch.cat([encoder.push(x[..., i : i + step]) for i in starts], -1)


def decode_in_chunks(model: AudioVQVAE, indices: Tensor, hops: int) -> Tensor:
    """``model.decode_indices(indices)`` computed by a ``StreamDecoder`` fed ``hops`` codes at
    a time (the last chunk may be shorter)."""
    step = check_hops(hops)
    decoder = model.stream_decoder()
    starts = range(0, max(indices.shape[-1], 1), step)
    return torch.cat([decoder.push(indices[..., i : i + step]) for i in starts], -1)
