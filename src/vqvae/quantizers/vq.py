"""Codebook quantizers: the nearest code from a learned codebook (van den Oord et al. 2017).

Four small classes share one base. ``VectorQuantizer`` learns the codebook by gradient through
the codebook loss ``||sg[z_e] - e||²``; ``EMAVectorQuantizer`` moves codes to exponential moving
averages of their assigned encoder outputs (the paper's appendix A.1); ``CosineVectorQuantizer``
searches l2-normalised vectors; ``SimVQ`` learns a linear map of a frozen random basis. The base
owns everything else, once: the search (``core.nearest_code``), the losses, the gradient
estimator (straight-through or rotation trick), k-means initialisation, dead-code reset, and
keeping all codebook statistics identical on every rank under ``torch.distributed``.

State changes (k-means init, EMA, usage, dead-code reset, the pool of recent encoder outputs)
happen only in training mode; in eval mode ``forward`` is a pure function of its input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.distributed import all_reduce_sum, broadcast, is_main_process, world_size
from vqvae.errors import ConfigError
from vqvae.quantizers import native
from vqvae.quantizers.base import ESTIMATORS, Quantizer, QuantizerOutput, quantize
from vqvae.quantizers.core import nearest_index, nearest_index_graph
from vqvae.quantizers.kmeans import kmeans


class CodebookQuantizer(Quantizer):
    """Shared core of the codebook quantizers. Input (B, D, *S) channel-first, as convs produce.

    Args:
        codebook_size: K, the number of codes.
        dim: D, the code dimension (channel count of the input).
        beta: weight of the commitment loss β·||z_e - sg[e]||² (0.25 in the paper).
        kmeans_init: on the first training batch, set the codebook by k-means on its vectors.
        dead_code_threshold: a code whose running usage (EMA of assignments per step) falls
            below this fraction of the uniform share N/K (N vectors per step) is replaced by a
            recent encoder output. 0 disables.
        usage_decay: decay of that running usage; the window is about 1 / (1 - decay) steps.
        gradient: ``"ste"`` (straight-through) or ``"rotation"`` (rotation trick).
        recent_size: capacity of the pool of recent encoder outputs that dead codes are reset
            to; every ``health_every``-th training step adds at most a quarter of it, so it
            spans the last few such batches. Default max(2K, 4096) vectors. Not saved (it
            refills in one step).
        health_every: look for dead codes (and add to the pool) on every this many training
            steps. A code is dead after about 1 / (1 - usage_decay) = 20 steps unused, so
            looking every 4th step revives it at most 3 steps later, for a quarter of the
            bookkeeping (a small part of a step, but more than half of the quantizer's own
            cost apart from the search).
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
        usage_decay: float = 0.95,
        gradient: str = "ste",
        recent_size: int | None = None,
        health_every: int = 4,
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
        if health_every < 1:
            raise ConfigError(f"health_every must be at least 1, got {health_every}")
        if gradient not in ESTIMATORS:
            raise ConfigError(f"gradient must be one of {sorted(ESTIMATORS)}, got {gradient!r}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.usage_decay = usage_decay
        self.gradient = gradient
        self.health_every = health_every
        # 1.0 once the codebook holds k-means centres (or when k-means init is off).
        self.register_buffer("initialized", torch.tensor(0.0 if kmeans_init else 1.0))
        self.register_buffer("usage", torch.zeros(codebook_size))
        # Ring buffer of recent encoder outputs (in search space) for dead-code reset, and the
        # number of rows ever written to it. Not part of a saved model, but buffers, so that a
        # training checkpoint can carry them (see training.checkpoint.transient_buffers).
        capacity = recent_size or max(2 * codebook_size, 4096)
        self.register_buffer("recent", torch.zeros(capacity, dim), persistent=False)
        self.register_buffer("recent_seen", torch.zeros((), dtype=torch.long), persistent=False)
        # Training steps taken: when to look after the codebook's health (also not saved).
        self.register_buffer("steps", torch.zeros((), dtype=torch.long), persistent=False)
        # The two buffers a step reads, mirrored in Python: reading a tensor's value costs
        # ~20 µs inside a training step. Written together with the buffers; re-read by
        # ``sync_from_buffers`` (and so by ``load_state_dict``) after writes from outside.
        self._step = 0
        self._initialized = not kmeans_init

    # --- the forward pass, the same for every codebook quantizer --------------------------------
    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_input(z)
        flat = self._search_input(z.movedim(1, -1).reshape(-1, self.dim))  # (N, D), N = B·prod(S)
        vectors = flat.detach()  # what the search and the codebook statistics see
        if self.training:  # state changes before the search, never between forward and backward
            step = self._next_step()
            self._prepare_codebook(vectors, step)
        codebook = self.codebook_vectors()  # (K, D)
        indices = nearest_index(vectors, codebook.detach())  # (N,)
        # (N, D) codes, (N, D) z - codes, (K,) counts, Σ(z - codes)²: one pass where it can be
        codes, diff, counts, sq_sum = native.gather(vectors, codebook, indices)
        codebook_loss = self._codebook_loss(flat, codes)
        # z_q (value exactly the codes; straight-through or rotation trick) and β·||z - sg[e]||²
        quantized, commitment_loss = quantize(flat, codes, self.beta, self.gradient, diff, sq_sum)
        if self.training:
            # Codebook statistics are not gradients, so DDP does not sync them: every rank
            # updates from the same global histogram (and sums, see EMA) to stay identical.
            counts = all_reduce_sum(counts)
            self._record(vectors, indices, counts, step)
        out_shape = (z.shape[0], *z.shape[2:], self.dim)
        return QuantizerOutput(
            quantized=quantized.reshape(out_shape).movedim(-1, 1),  # (B, D, *S)
            indices=indices.reshape(out_shape[:-1]),  # (B, *S)
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            code_counts=counts,
        )

    def lookup(self, indices: Tensor) -> Tensor:
        """Codes for an index map: (B, *S) int -> (B, D, *S)."""
        self._check_indices(indices)
        return self.export_lookup(indices)

    def export_lookup(self, indices: Tensor) -> Tensor:
        return F.embedding(indices.long(), self.codebook_vectors().detach()).movedim(-1, 1)

    def export_indices(self, z: Tensor) -> Tensor:
        """The eval-mode indices by ``core.nearest_index_graph`` (matrix product + argmin)."""
        flat = self._search_input(z.movedim(1, -1).reshape(-1, self.dim))  # (N, D)
        indices = nearest_index_graph(flat, self.codebook_vectors().detach())  # (N,)
        return indices.reshape(z.shape[0], *z.shape[2:])  # (B, *S)

    def codebook_vectors(self) -> Tensor:
        """(K, D): the vectors the search compares against and ``lookup`` returns."""
        return self.codebook

    # --- hooks the subclasses fill in -----------------------------------------------------------
    def _search_input(self, flat: Tensor) -> Tensor:
        """Encoder outputs (N, D) as the search sees them (identity; unit vectors for cosine)."""
        return flat

    def _codebook_loss(self, flat: Tensor, codes: Tensor) -> Tensor:
        raise NotImplementedError

    def _update_codebook(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        """Training-mode codebook statistics update (EMA) from this step's vectors, their codes
        and the (float) histogram over all ranks; nothing for gradient codebooks."""

    def _set_codes(self, which: Tensor, vectors: Tensor) -> None:
        """Overwrite codes ``which`` (bool mask (K,) or indices) with ``vectors``."""
        self.codebook.data[which] = vectors.to(self.codebook.dtype)

    # --- codebook health ------------------------------------------------------------------------
    def sync_from_buffers(self) -> None:
        self._step = int(self.steps)
        self._initialized = bool(self.initialized)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.sync_from_buffers()

    def _next_step(self) -> int:
        """This training step's number; counts it in the ``steps`` buffer."""
        step = self._step
        self._step = step + 1
        self.steps.fill_(step + 1)
        return step

    def _health_step(self, step: int) -> bool:
        """Whether training step ``step`` looks for dead codes (and feeds the recent pool)."""
        return self.dead_code_threshold > 0 and step % self.health_every == 0

    @torch.no_grad()
    def _prepare_codebook(self, flat: Tensor, step: int) -> None:
        """Before a training step's search: k-means init on the first batch, dead-code reset."""
        per_step = flat.shape[0] * world_size()  # vectors per step over all ranks
        if not self._initialized:
            self._init_codebook(flat, per_step)
        if self._health_step(step):
            self._reset_dead_codes(per_step)

    @torch.no_grad()
    def _record(self, flat: Tensor, indices: Tensor, counts: Tensor, step: int) -> None:
        """After a training step's search: the codebook statistics (EMA), the running usage and
        the pool of recent encoder outputs, from this step's vectors and the global histogram."""
        weights = counts.to(self.usage.dtype)
        self._update_codebook(flat, indices, weights)
        self.usage.lerp_(weights, 1 - self.usage_decay)  # usage <- d·usage + (1 - d)·counts
        if self._health_step(step):
            self._remember(flat, step // self.health_every)

    def _init_codebook(self, flat: Tensor, per_step: int) -> None:
        # Rank 0 clusters its batch and broadcasts, so every rank starts from the same codebook.
        if is_main_process():
            centres = kmeans(flat, self.codebook_size, iters=self.kmeans_iters)
        else:
            centres = flat.new_empty(self.codebook_size, self.dim)
        centres = broadcast(centres.to(flat.dtype).contiguous())
        self._set_codes(torch.ones(self.codebook_size, dtype=torch.bool), centres)
        self.usage.fill_(math.e * self._dead_below(per_step))
        self.initialized.fill_(1.0)
        self._initialized = True

    def _dead_below(self, per_step: int) -> float:
        """Running usage (assignments per step) below which a code is dead."""
        return self.dead_code_threshold * per_step / self.codebook_size

    def _remember(self, flat: Tensor, call: int) -> None:
        """Add an evenly spread subset of this batch's encoder outputs to the recent pool: every
        s-th row from an offset that moves with each call. Rows run over (batch item, position)
        and batches are shuffled, so this samples the batch as a random subset would, without
        drawing one (a view, not a gather)."""
        capacity = self.recent.shape[0]
        n = min(flat.shape[0], max(1, capacity // 4))
        stride = flat.shape[0] // n
        offset = call % stride
        rows = flat[offset : offset + n * stride : stride].to(self.recent.dtype)  # (n, D)
        start = int(self.recent_seen) % capacity
        first = min(n, capacity - start)  # up to the end of the ring, then from its start
        self.recent[start : start + first] = rows[:first]
        if first < n:
            self.recent[: n - first] = rows[first:]
        self.recent_seen += n

    def _reset_dead_codes(self, per_step: int) -> None:
        """Replace codes whose running usage fell below the threshold by recent encoder outputs
        (Dhariwal et al. 2020, "Jukebox", sec. 3.2; Zeghidour et al. 2021, "SoundStream")."""
        below = self._dead_below(per_step)
        dead = torch.nonzero(self.usage < below).squeeze(1)  # (n_dead,), the same on every rank
        n_dead = dead.numel()
        seen = int(self.recent_seen) if n_dead else 0
        filled = min(seen, self.recent.shape[0])
        if filled == 0:
            return
        if n_dead <= filled:  # the latest distinct entries, so revived codes do not coincide
            slots = (seen - n_dead + torch.arange(n_dead, device=dead.device)) % filled
        else:
            slots = torch.randint(filled, (n_dead,), device=dead.device)
        vectors = broadcast(self.recent[slots])  # rank 0's pool entries for every rank
        self._set_codes(dead, vectors)
        # A fresh code starts at e·threshold: never chosen, it falls below the threshold after
        # about one usage window (d^(1/(1-d)) ≈ 1/e), so a stranded code is replaced within
        # ~1/(1-d) steps, while a chosen one has that long to prove itself.
        self.usage[dead] = math.e * below


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


class CosineVectorQuantizer(VectorQuantizer):
    """l2-normalised codes (Yu et al. 2021, "Vector-quantized Image Modeling with Improved
    VQGAN", sec. 3.2): encoder outputs and codes are projected onto the unit sphere before the
    search, so the nearest code in Euclidean distance (||a - b||² = 2 - 2cos) is the one of
    highest cosine similarity, and no code can drift out of reach of the data by its norm.

    The codebook is learned by gradient; ``quantized`` holds unit vectors and the losses compare
    unit vectors.
    """

    def codebook_vectors(self) -> Tensor:
        return F.normalize(self.codebook, dim=1)

    def _search_input(self, flat: Tensor) -> Tensor:
        return F.normalize(flat, dim=1)

    def _set_codes(self, which: Tensor, vectors: Tensor) -> None:
        super()._set_codes(which, F.normalize(vectors, dim=1))


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

    def _update_codebook(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        state = (self.cluster_size, self.embed_sum, self.codebook)  # updated in place
        native.ema_update(flat, indices, counts, self.decay, self.eps, *state)

    @torch.no_grad()
    def _set_codes(self, which: Tensor, vectors: Tensor) -> None:
        # Keep the EMA statistics consistent with the new codes: m_i = e_i · N_i.
        vectors = vectors.to(self.codebook.dtype)
        self.codebook[which] = vectors
        size = self.cluster_size[which].clamp_min_(1.0)
        self.cluster_size[which] = size
        self.embed_sum[which] = vectors * size[:, None]


class SimVQ(CodebookQuantizer):
    """The codebook as a learned linear map of a frozen basis (Zhu et al. 2024, "Addressing
    Representation Collapse in Vector Quantized Models with One Linear Layer", SimVQ):
    codes = C·Wᵀ with C (K, D) a fixed random basis and W (D, D) learned by the codebook loss
    ``||sg[z_e] - C·Wᵀ||²``. Every step's gradient moves the whole codebook through W, not just
    the chosen codes, so codes far from the data are carried along instead of stranded.

    The search is the family's nearest-code core over the (K, D) codes. k-means init and dead-code
    reset still apply: they set the chosen codes by solving for their basis rows (C ← V·W⁻ᵀ),
    the only writes the basis sees; W starts as the identity, so the first codebook is C.
    """

    def __init__(self, codebook_size: int, dim: int, **kwargs) -> None:
        super().__init__(codebook_size, dim, **kwargs)
        self.register_buffer("basis", torch.randn(codebook_size, dim) / math.sqrt(dim))
        self.linear = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.linear.weight)

    def codebook_vectors(self) -> Tensor:
        return self.linear(self.basis)  # (K, D) = C·Wᵀ

    def _codebook_loss(self, flat: Tensor, codes: Tensor) -> Tensor:
        return F.mse_loss(codes, flat.detach())

    @torch.no_grad()
    def _set_codes(self, which: Tensor, vectors: Tensor) -> None:
        # rows of C with C[which]·Wᵀ = vectors: W·C[which]ᵀ = vectorsᵀ, solved in float64
        w = self.linear.weight.double()
        rows = torch.linalg.lstsq(w, vectors.double().t()).solution.t()
        self.basis[which] = rows.to(self.basis.dtype)
