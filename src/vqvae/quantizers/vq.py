"""Codebook quantizers: nearest code with a straight-through gradient (van den Oord et al. 2017).

Two small classes share one base: ``VectorQuantizer`` learns the codebook by gradient through the
codebook loss ``||sg[z_e] - e||²``; ``EMAVectorQuantizer`` moves codes to exponential moving
averages of their assigned encoder outputs (the paper's appendix A.1). The base owns what is the
same for both: the nearest-code search (``core.nearest_code``), the losses, k-means initialisation
and dead-code reset.

State changes (k-means init, EMA, dead-code reset, usage window) happen only in training mode;
in eval mode ``forward`` is a pure function of its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.errors import ConfigError
from vqvae.quantizers.core import nearest_code
from vqvae.quantizers.kmeans import kmeans


@dataclass
class QuantizerOutput:
    """What every quantizer returns. ``commitment_loss`` already carries β."""

    quantized: Tensor  # (B, D, *S) z_q, with the straight-through gradient to z_e
    indices: Tensor  # (B, *S) int64
    codebook_loss: Tensor  # ||sg[z_e] - e||² (zero for EMA codebooks, which get no gradient)
    commitment_loss: Tensor  # β·||z_e - sg[e]||²
    code_counts: Tensor  # (K,) how often each code was chosen in this batch
    perplexity: Tensor  # exp(entropy) of this batch's code histogram (use a window for health)

    @property
    def loss(self) -> Tensor:
        return self.codebook_loss + self.commitment_loss


def perplexity_of(counts: Tensor) -> Tensor:
    """exp(entropy) of a code histogram: K when codes are used uniformly, 1 when one code is."""
    p = counts.float() / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class CodebookQuantizer(nn.Module):
    """Shared core of the codebook quantizers. Input (B, D, *S) channel-first, as convs produce.

    Args:
        codebook_size: K, the number of codes.
        dim: D, the code dimension (channel count of the input).
        beta: weight of the commitment loss β·||z_e - sg[e]||² (0.25 in the paper).
        kmeans_init: on the first training batch, set the codebook by k-means on its vectors.
        dead_code_threshold: a code whose running usage (EMA of assignments per step) falls
            below this is replaced by a random encoder output of the current batch. 0 disables.
        usage_decay: decay of that running usage; the window is about 1 / (1 - decay) steps.
    """

    codebook: Tensor

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        beta: float = 0.25,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.03,
        usage_decay: float = 0.99,
    ) -> None:
        super().__init__()
        if codebook_size < 2:
            raise ConfigError(f"codebook_size must be at least 2, got {codebook_size}")
        if dim < 1:
            raise ConfigError(f"code dim must be at least 1, got {dim}")
        if beta < 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
        if not 0 <= usage_decay < 1:
            raise ConfigError(f"usage_decay must be in [0, 1), got {usage_decay}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.usage_decay = usage_decay
        # 1.0 once the codebook holds k-means centres (or when k-means init is off).
        self.register_buffer("initialized", torch.tensor(0.0 if kmeans_init else 1.0))
        self.register_buffer("usage", torch.zeros(codebook_size))

    # --- the forward pass, the same for every codebook quantizer --------------------------------
    def forward(self, z: Tensor) -> QuantizerOutput:
        if z.dim() < 2 or z.shape[1] != self.dim:
            raise ValueError(f"expected input (B, {self.dim}, ...), got {tuple(z.shape)}")
        flat = z.movedim(1, -1).reshape(-1, self.dim)  # (N, D), N = B·prod(S)
        if self.training and not self.initialized:
            self._init_codebook(flat)
        indices, _ = nearest_code(flat.detach(), self.codebook.detach())  # (N,)
        counts = torch.bincount(indices, minlength=self.codebook_size)
        codes = F.embedding(indices, self.codebook)  # (N, D), the codes the search chose
        codebook_loss = self._codebook_loss(flat, codes)
        commitment_loss = self.beta * F.mse_loss(flat, codes.detach())
        if self.training:
            self._update_codebook(flat.detach(), indices, counts)
        # Straight-through estimator: the forward value is exactly z_q (x - x == 0 in IEEE
        # arithmetic, so decode_indices reproduces it bit for bit) and the backward pass hands
        # the gradient at z_q to z_e unchanged.
        st = codes.detach() + (flat - flat.detach())
        out_shape = (z.shape[0], *z.shape[2:], self.dim)
        quantized = st.reshape(out_shape).movedim(-1, 1)  # (B, D, *S)
        if self.training:
            self._maybe_reset_dead_codes(flat.detach(), counts)
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.reshape(out_shape[:-1]),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            code_counts=counts,
            perplexity=perplexity_of(counts),
        )

    def lookup(self, indices: Tensor) -> Tensor:
        """Codes for an index map: (B, *S) int -> (B, D, *S)."""
        if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"indices must be integers, got {indices.dtype}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(
                f"indices must lie in [0, {self.codebook_size}), got range "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        return F.embedding(indices.long(), self.codebook.detach()).movedim(-1, 1)

    # --- hooks the subclasses fill in -----------------------------------------------------------
    def _codebook_loss(self, flat: Tensor, codes: Tensor) -> Tensor:
        raise NotImplementedError

    def _update_codebook(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        """Training-mode codebook statistics update (EMA); nothing for gradient codebooks."""

    def _set_codes(self, which: Tensor, vectors: Tensor) -> None:
        """Overwrite codes ``which`` (bool mask (K,) or indices) with ``vectors``."""
        self.codebook.data[which] = vectors.to(self.codebook.dtype)

    # --- codebook health ------------------------------------------------------------------------
    @torch.no_grad()
    def _init_codebook(self, flat: Tensor) -> None:
        centres = kmeans(flat, self.codebook_size, iters=self.kmeans_iters)
        self._set_codes(torch.ones(self.codebook_size, dtype=torch.bool), centres)
        # Give every code the average usage so none is reset before it has had a chance.
        self.usage.fill_(flat.shape[0] / self.codebook_size)
        self.initialized.fill_(1.0)

    @torch.no_grad()
    def _maybe_reset_dead_codes(self, flat: Tensor, counts: Tensor) -> None:
        decay = self.usage_decay
        self.usage.mul_(decay).add_(counts.to(self.usage.dtype), alpha=1 - decay)
        if self.dead_code_threshold <= 0:
            return
        dead = self.usage < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        # Revive with encoder outputs of this batch (Dhariwal et al. 2020, "Jukebox", sec. 3.2).
        pick = torch.randint(flat.shape[0], (n_dead,), device=flat.device)
        self._set_codes(dead, flat[pick])
        self.usage[dead] = self.usage.mean().clamp_min(2 * self.dead_code_threshold)


class VectorQuantizer(CodebookQuantizer):
    """Codebook learned by gradient: loss = ||sg[z_e] - e||² + β·||z_e - sg[e]||².

    Example::

        vq = VectorQuantizer(codebook_size=512, dim=64, beta=0.25)
        out = vq(torch.randn(8, 64, 7, 7))  # out.quantized (8, 64, 7, 7), out.indices (8, 7, 7)
    """

    def __init__(self, codebook_size: int, dim: int, **kwargs) -> None:
        super().__init__(codebook_size, dim, **kwargs)
        # Uniform init as in the paper's reference code; k-means replaces it when enabled.
        bound = 1.0 / codebook_size
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim).uniform_(-bound, bound))

    def _codebook_loss(self, flat: Tensor, codes: Tensor) -> Tensor:
        return F.mse_loss(codes, flat.detach())


class EMAVectorQuantizer(CodebookQuantizer):
    """Codebook updated by exponential moving averages (paper appendix A.1), no codebook loss.

    N_i <- γ N_i + (1-γ) n_i,  m_i <- γ m_i + (1-γ) Σ_j z_{i,j},  e_i = m_i / N_i,
    with Laplace smoothing of N_i so an unused code never divides by zero. The statistics are
    buffers (not trainable) and change only in training mode.
    """

    def __init__(
        self, codebook_size: int, dim: int, *, decay: float = 0.99, eps: float = 1e-5, **kwargs
    ) -> None:
        super().__init__(codebook_size, dim, **kwargs)
        if not 0 < decay < 1:
            raise ConfigError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.eps = eps
        codebook = torch.randn(codebook_size, dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", codebook.clone())

    def _codebook_loss(self, flat: Tensor, codes: Tensor) -> Tensor:
        return flat.new_zeros(())

    @torch.no_grad()
    def _update_codebook(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        sums = torch.zeros_like(self.embed_sum).index_add_(
            0, indices, flat.to(self.embed_sum.dtype)
        )
        self.cluster_size.mul_(self.decay).add_(
            counts.to(self.cluster_size.dtype), alpha=1 - self.decay
        )
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def _set_codes(self, which: Tensor, vectors: Tensor) -> None:
        # Keep the EMA statistics consistent with the new codes: m_i = e_i · N_i.
        self.codebook[which] = vectors.to(self.codebook.dtype)
        size = self.cluster_size[which].clamp_min(1.0)
        self.cluster_size[which] = size
        self.embed_sum[which] = self.codebook[which] * size[:, None]
