"""Lookup-free quantizers: LFQ (Yu et al. 2023, "Language Model Beats Diffusion — Tokenizer is
Key to Visual Generation", MAGVIT-v2, sec. 3.1) and BSQ (Zhao et al. 2024, "Image and Video
Tokenization with Binary Spherical Quantization").

The implicit codebook is the 2^bits corners of a hypercube, so there is no codebook to learn,
search or collapse: project the encoder output D -> bits (a learned linear map; none when
D = bits), take the sign of every channel (bit i of the index is channel i > 0), project back
bits -> D. The gradient passes the sign straight through.

- ``LFQ``: corners at ±1.
- ``BSQ``: the projected vector is first l2-normalised onto the unit sphere and the corners are
  ±1/sqrt(bits), themselves unit vectors, so the quantization error is bounded and the codes
  all have the same norm.

Both train with a commitment term β·||u - sg[q]||² (u the projected vector, q its corner) and an
entropy penalty that keeps every code in use. With the soft assignment of u to the corners
p(c | u) ∝ exp(-||u - c||² / τ), which factorises over the channels (channel i is +s with
probability σ(4·s·u_i / τ), s the corner's coordinate), the penalty is

    weight · ( mean_n H[p(· | u_n)]  -  γ · H[mean_n p(· | u_n)] )

(MAGVIT-v2, eq. 5): each vector's assignment confident (per-sample entropy down), the batch's
average assignment spread over all codes (batch entropy up). The per-sample entropy is the sum
of the channels' binary entropies, exactly. The batch entropy is computed over all 2^bits codes
when there are at most ``exact_entropy_codes`` of them (in row chunks, with a hand-written
backward pass that recomputes each chunk, so memory stays within ~2^22 floats for any batch),
and above that by the factorised form Σ_i H[mean_n p_i] (the entropy of each channel's average;
an upper bound of the exact one, reached when the channels are independent over the batch),
which costs O(N·bits). The penalty is returned as ``codebook_loss`` (these quantizers have no
codebook; it is the term that shapes code usage) and is computed in training mode only.

Nothing is kept between steps, so there is nothing to synchronise under DDP beyond the
gradients; the batch entropy is each rank's own batch's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.distributed import all_reduce_sum
from vqvae.errors import ConfigError
from vqvae.quantizers.base import Quantizer, QuantizerOutput, quantize

MAX_BITS = 24  # 16.7 M codes: the code histogram (K,) is then 128 MiB of int64
EXACT_ENTROPY_CODES = 1024  # exact batch entropy up to this many codes, factorised above
_CHUNK_ELEMENTS = 1 << 22  # (rows × K) probabilities per chunk of the exact batch entropy


class LFQ(Quantizer):
    """Lookup-free quantizer with ``codebook_size = 2**bits`` codes.

    Example::

        lfq = LFQ(bits=12, dim=64)          # 4096 codes, a learned 64 -> 12 -> 64 projection
        out = lfq(torch.randn(8, 64, 7, 7))  # indices (8, 7, 7) in [0, 4096)

    Args:
        bits: number of sign channels; K = 2**bits.
        dim: D, the input's channel count.
        beta: weight of the commitment term β·||u - sg[q]||².
        entropy_weight: weight of the whole entropy penalty (0 = off).
        batch_entropy_weight: γ, the weight of the batch entropy against the per-sample one.
        temperature: τ of the soft assignment p(c | u) ∝ exp(-||u - c||² / τ).
        exact_entropy_codes: the batch entropy is exact up to this many codes, factorised above.
    """

    spherical = False

    def __init__(
        self,
        bits: int,
        dim: int,
        *,
        beta: float = 0.25,
        entropy_weight: float = 0.1,
        batch_entropy_weight: float = 1.0,
        temperature: float = 0.01,
        exact_entropy_codes: int = EXACT_ENTROPY_CODES,
    ) -> None:
        super().__init__()
        if not 1 <= bits <= MAX_BITS:
            raise ConfigError(f"bits must be in [1, {MAX_BITS}], got {bits}")
        if dim < 1:
            raise ConfigError(f"code dim must be at least 1, got {dim}")
        if beta < 0 or entropy_weight < 0 or batch_entropy_weight < 0:
            raise ConfigError("beta and the entropy weights must be >= 0")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.bits = bits
        self.dim = dim
        self.codebook_size = 2**bits
        self.beta = beta
        self.entropy_weight = entropy_weight
        self.batch_entropy_weight = batch_entropy_weight
        self.temperature = temperature
        self.exact_entropy_codes = exact_entropy_codes
        # the corners' coordinate: ±1 (LFQ), ±1/sqrt(bits) (BSQ: unit vectors)
        self.scale = 1.0 / math.sqrt(bits) if self.spherical else 1.0
        self.register_buffer("_place", 2 ** torch.arange(bits), persistent=False)  # bit values
        same = dim == bits
        self.project_in = nn.Identity() if same else nn.Linear(dim, bits)
        self.project_out = nn.Identity() if same else nn.Linear(bits, dim)

    # --- the forward pass -----------------------------------------------------------------------
    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_input(z)
        u = self._project(z.movedim(1, -1).reshape(-1, self.dim))  # (N, bits)
        positive = u.detach() > 0  # (N, bits) the index's bits
        corners = self._corners(positive, u.dtype)
        quantized, commitment = quantize(u, corners, self.beta, "ste")
        indices = (positive.long() * self._place).sum(-1)  # (N,)
        counts = torch.bincount(indices, minlength=self.codebook_size)
        if self.training:
            counts = all_reduce_sum(counts)  # health is the same on every rank
        penalty = self.entropy_penalty(u) if self.training else u.new_zeros(())
        out_shape = (z.shape[0], *z.shape[2:], self.dim)
        return QuantizerOutput(
            quantized=self.project_out(quantized).reshape(out_shape).movedim(-1, 1),
            indices=indices.reshape(out_shape[:-1]),  # (B, *S)
            codebook_loss=penalty,
            commitment_loss=commitment,
            code_counts=counts,
        )

    def _project(self, flat: Tensor) -> Tensor:
        """(N, D) -> the (N, bits) vectors whose signs are quantized."""
        u = self.project_in(flat)
        return F.normalize(u, dim=-1) if self.spherical else u

    def _corners(self, positive: Tensor, dtype: torch.dtype) -> Tensor:
        """Bits (N, bits) bool -> the corners ±scale (N, bits)."""
        return torch.where(positive, self.scale, -self.scale).to(dtype)

    # --- the entropy penalty --------------------------------------------------------------------
    def bit_logits(self, u: Tensor) -> Tensor:
        """(N, bits) -> log-odds that each channel's corner is +s under p(c | u) ∝
        exp(-||u - c||² / τ): 4·s·u_i / τ."""
        return u * (4.0 * self.scale / self.temperature)

    def entropies(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """(mean per-sample entropy, batch entropy) in nats of the soft assignments of u (N, bits);
        the batch entropy exact or factorised as the module docstring says."""
        a = self.bit_logits(u.float())
        p = torch.sigmoid(a)
        per_sample = (F.softplus(a) - p * a).sum(-1).mean()  # Σ_i H_b(σ(a_i)), exactly
        if self.codebook_size <= self.exact_entropy_codes:
            batch = _ExactBatchEntropy.apply(a, _bit_table(self.bits, a.device))
        else:
            batch = _factorised_batch_entropy(a)
        return per_sample, batch

    def entropy_penalty(self, u: Tensor) -> Tensor:
        """weight·(per-sample entropy + γ·(log K - batch entropy)): the docstring's penalty plus
        the constant γ·log K, so it is >= 0 and 0 at the ideal (every vector certain of its code,
        the batch spread evenly over all K), like the other quantizers' losses."""
        if self.entropy_weight == 0:
            return u.new_zeros(())
        per_sample, batch = self.entropies(u)
        spread = self.bits * math.log(2) - batch  # log K - H >= 0
        return self.entropy_weight * (per_sample + self.batch_entropy_weight * spread)

    # --- indices <-> codes ----------------------------------------------------------------------
    def lookup(self, indices: Tensor) -> Tensor:
        """(B, *S) int -> (B, D, *S): index -> bits -> corner -> project out."""
        self._check_indices(indices)
        return self.export_lookup(indices)

    def export_lookup(self, indices: Tensor) -> Tensor:
        positive = (indices.long().reshape(-1, 1) // self._place) % 2 == 1  # (N, bits)
        corners = self._corners(positive, self._dtype())
        return self.project_out(corners).reshape(*indices.shape, self.dim).movedim(-1, 1)

    def export_indices(self, z: Tensor) -> Tensor:
        u = self._project(z.movedim(1, -1).reshape(-1, self.dim))
        indices = ((u > 0).long() * self._place).sum(-1)
        return indices.reshape(z.shape[0], *z.shape[2:])  # (B, *S)

    def _dtype(self) -> torch.dtype:
        weight = getattr(self.project_out, "weight", None)
        return torch.float32 if weight is None else weight.dtype


class BSQ(LFQ):
    """Binary spherical quantizer: LFQ on the l2-normalised projection, corners ±1/sqrt(bits)
    (unit vectors). Same arguments as :class:`LFQ`."""

    spherical = True


def _factorised_batch_entropy(a: Tensor) -> Tensor:
    """Σ_i H(mean_n σ(a_ni)) in nats for bit log-odds a (N, bits). A channel can saturate (at
    temperature 0.01 a real batch gives |a| in the hundreds, and σ rounds to exactly 0 or 1 for
    every vector): H'(p) = log((1 - p) / p) is then infinite while dp/da is 0, and the product,
    NaN, used to poison the whole step. So each channel's probability and its complement are
    averaged separately (σ(-a), where 1 - σ(a) would round to 0) and their logs are taken of
    values kept above the smallest normal float: the value is unchanged and a saturated channel's
    gradient is 0."""
    tiny = torch.finfo(a.dtype).tiny
    p, q = torch.sigmoid(a).mean(0), torch.sigmoid(-a).mean(0)
    return -(p * p.clamp_min(tiny).log() + q * q.clamp_min(tiny).log()).sum()


def _bit_table(bits: int, device: torch.device) -> Tensor:
    """(2**bits, bits) float: row c holds the bits of index c (bit i = channel i positive)."""
    codes = torch.arange(2**bits, device=device)[:, None]
    return ((codes >> torch.arange(bits, device=device)) & 1).float()


class _ExactBatchEntropy(torch.autograd.Function):
    """H[mean_n p(· | a_n)] over all K = 2**bits codes, where log p(c | a_n) =
    Σ_i (b_ci·a_ni - softplus(a_ni)) for channel log-odds a (N, bits) and the bit table
    b (K, bits). The (rows × K) probabilities exist one chunk at a time in both passes: backward
    recomputes them, with dH/da_ni = (1/N) Σ_c g_c p_nc (b_ci - σ(a_ni)), g_c = -(log avg_c + 1).
    """

    @staticmethod
    def _chunks(a: Tensor, table: Tensor):
        rows = max(1, _CHUNK_ELEMENTS // table.shape[0])
        for start in range(0, a.shape[0], rows):
            ac = a[start : start + rows]
            log_p = torch.addmm(-F.softplus(ac).sum(1, keepdim=True), ac, table.t())  # (n, K)
            yield start, ac, log_p.exp_()

    @staticmethod
    def forward(ctx, a: Tensor, table: Tensor) -> Tensor:
        a = a.detach()
        avg = a.new_zeros(table.shape[0])
        for _, _, p in _ExactBatchEntropy._chunks(a, table):
            avg += p.sum(0)
        avg /= max(a.shape[0], 1)
        ctx.save_for_backward(a, table, avg)
        return -torch.xlogy(avg, avg).sum()

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, table, avg = ctx.saved_tensors
        g = -(torch.log(avg.clamp_min(torch.finfo(avg.dtype).tiny)) + 1) * grad  # (K,)
        out = torch.empty_like(a)
        for start, ac, p in _ExactBatchEntropy._chunks(a, table):
            pg = p.mul_(g)  # (n, K) g_c p_nc
            t = pg @ table - torch.sigmoid(ac) * pg.sum(1, keepdim=True)
            out[start : start + ac.shape[0]] = t / max(a.shape[0], 1)
        return out, None
