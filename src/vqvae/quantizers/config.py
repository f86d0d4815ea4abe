"""The quantizer section of a model config, and the one place that turns it into a module.

``kind`` picks the quantizer; the options below it apply where their comment says and are
ignored elsewhere (so switching ``kind`` never requires unsetting anything):

==============  ========================================================================
``vq``          codebook learned by gradient (codebook + commitment losses)
``ema``         codebook moved by exponential moving averages (paper appendix A.1)
``cosine``      l2-normalised codes and encoder outputs (gradient codebook)
``residual``    ``levels`` EMA codebooks on successive residuals; indices (B, L, h, w)
``fsq``         finite scalar quantization on the grid ``fsq_levels``; no codebook
``lfq``         lookup-free: the signs of log2(K) projected channels, entropy penalty
``bsq``         binary spherical: LFQ on the l2-normalised projection, corners ±1/sqrt(bits)
``simvq``       codebook = frozen random basis × learned linear map (gradient codebook)
==============  ========================================================================

``quantizer_dropout`` = p > 0 (``residual`` only) trains for every depth: with probability p a
training step uses only the first n ~ U{1..L} levels (SoundStream's quantizer dropout; see
``quantizers.residual``), so the first k levels of the codes decode well for every k.

``lookup_dim`` > 0 wraps any codebook kind in a learned projection D -> lookup_dim -> D and
``gradient`` picks the estimator (straight-through or the rotation trick) of any codebook kind.

For ``fsq`` the codebook size is the grid size: ``codebook_size`` must equal
``prod(fsq_levels)``. With ``fsq_levels`` empty the levels are derived from ``codebook_size``
(``fsq.fsq_levels_for``): the paper's recommended set for 240, 1000, 4375, 15360 or 64000 codes
(≈ 2^8 ... 2^16), else for a power of two 8s and 4s (512 -> 8,8,8; 1024 -> 8,8,4,4).
For ``lfq`` and ``bsq`` ``codebook_size`` must be a power of two, 2^bits (bits <= 24); their
entropy penalty is ``entropy_weight``·(per-sample entropy + ``entropy_batch_weight``·(log K -
batch entropy)) at temperature ``entropy_temperature`` (see ``quantizers.lfq``).

Adding a quantizer is one builder ``(config) -> Quantizer`` and one ``QUANTIZERS.register``
line; ``kind`` is checked against that registry, and ``build_quantizer`` looks it up once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from vqvae.errors import ConfigError
from vqvae.quantizers.base import Quantizer
from vqvae.quantizers.fsq import FSQ, RECOMMENDED_LEVELS, fsq_levels_for
from vqvae.quantizers.lfq import BSQ, LFQ, MAX_BITS
from vqvae.quantizers.lowdim import LowDimQuantizer
from vqvae.quantizers.residual import ResidualVectorQuantizer
from vqvae.quantizers.vq import (
    CodebookQuantizer,
    CosineVectorQuantizer,
    EMAVectorQuantizer,
    SimVQ,
    VectorQuantizer,
)
from vqvae.registry import Registry

_WHERE = "model.quantizer"

# kind -> builder: the config (its ``dim`` is the search dimension) -> the quantizer module.
QUANTIZERS: Registry[Callable[[QuantizerConfig], Quantizer]] = Registry("quantizer")


@dataclass
class QuantizerConfig:
    kind: str = "ema"  # a key of QUANTIZERS: vq, ema, cosine, residual, fsq, lfq, bsq, simvq
    codebook_size: int = 512  # K (per level for residual; prod(fsq_levels) for fsq; 2^bits lfq/bsq)
    dim: int = 64  # D, the encoder's output channels
    beta: float = 0.25  # weight of the commitment term (codebook kinds)
    decay: float = 0.99  # EMA decay (ema, residual)
    kmeans_init: bool = True  # k-means on the first training batch's encoder outputs (codebooks)
    # Reset codes whose running usage falls below this fraction of the uniform share N/K of the
    # N vectors per step (0 = never), within a window of ≈ 1 / (1 - usage_decay) steps.
    dead_code_threshold: float = 0.03
    usage_decay: float = 0.95
    gradient: Literal["ste", "rotation"] = "ste"  # straight-through or rotation trick (codebooks)
    lookup_dim: int = 0  # search in a learned projection to this many dims (0 = off; codebooks)
    levels: int = 2  # residual: number of quantizers on successive residuals
    # residual: probability that a training step uses a random number n ~ U{1..L} of levels
    # (quantizer dropout; 1 = SoundStream's, 0 = off)
    quantizer_dropout: float = 0.0
    fsq_levels: tuple[int, ...] = ()  # fsq: bins per channel; () = the paper's set for K
    # lfq, bsq: the entropy penalty's weight, the batch entropy's weight γ against the
    # per-sample entropy, and the temperature τ of the soft assignment exp(-||u - c||² / τ)
    entropy_weight: float = 0.1
    entropy_batch_weight: float = 1.0
    entropy_temperature: float = 0.01

    def __post_init__(self) -> None:
        def bad(option: str, message: str) -> ConfigError:
            return ConfigError(f"{_WHERE}.{option} {message}")

        QUANTIZERS.get(self.kind, f"{_WHERE}.kind")  # unknown: a ConfigError listing the kinds
        if self.codebook_size < 2:
            raise bad("codebook_size", f"must be at least 2, got {self.codebook_size}")
        if self.dim < 1:
            raise bad("dim", f"must be at least 1, got {self.dim}")
        if self.beta < 0:
            raise bad("beta", f"must be >= 0, got {self.beta}")
        if not 0 < self.decay < 1:
            raise bad("decay", f"must be in (0, 1), got {self.decay}")
        if not 0 <= self.usage_decay < 1:
            raise bad("usage_decay", f"must be in [0, 1), got {self.usage_decay}")
        if self.dead_code_threshold < 0:
            raise bad("dead_code_threshold", f"must be >= 0, got {self.dead_code_threshold}")
        if self.lookup_dim < 0:
            raise bad("lookup_dim", f"must be >= 0 (0 = off), got {self.lookup_dim}")
        if self.levels < 1:
            raise bad("levels", f"must be at least 1, got {self.levels}")
        if not 0 <= self.quantizer_dropout <= 1:
            raise bad("quantizer_dropout", f"must be in [0, 1], got {self.quantizer_dropout}")
        if self.quantizer_dropout and self.kind != "residual":
            raise bad("quantizer_dropout", f"applies to kind = 'residual' only, not {self.kind!r}")
        if self.entropy_weight < 0:
            raise bad("entropy_weight", f"must be >= 0, got {self.entropy_weight}")
        if self.entropy_batch_weight < 0:
            raise bad("entropy_batch_weight", f"must be >= 0, got {self.entropy_batch_weight}")
        if not self.entropy_temperature > 0:
            raise bad("entropy_temperature", f"must be > 0, got {self.entropy_temperature}")
        if self.kind == "fsq":
            self._check_fsq(bad)
        elif self.fsq_levels:
            raise bad("fsq_levels", f"applies to kind = 'fsq' only, not {self.kind!r}")
        if self.kind in ("lfq", "bsq"):
            self._check_lookup_free(bad)

    def _check_lookup_free(self, bad) -> None:
        kind = self.kind
        if self.lookup_dim:
            raise bad("lookup_dim", f"does not apply to kind = {kind!r} (it projects by itself)")
        if self.gradient != "ste":
            raise bad(
                "gradient", f"must be 'ste' for kind = {kind!r} (a sign has no code to rotate)"
            )
        k = self.codebook_size
        if k & (k - 1) or k > 2**MAX_BITS:
            raise bad(
                "codebook_size",
                f"must be a power of two up to 2^{MAX_BITS} for kind = {kind!r} (K = 2^bits), "
                f"got {k}",
            )

    def _check_fsq(self, bad) -> None:
        if self.lookup_dim:
            raise bad("lookup_dim", "does not apply to kind = 'fsq' (FSQ projects by itself)")
        if self.gradient != "ste":
            raise bad("gradient", "must be 'ste' for kind = 'fsq' (rounding has no code to rotate)")
        if any(n < 2 for n in self.fsq_levels):
            raise bad("fsq_levels", f"must all be >= 2, got {list(self.fsq_levels)}")
        levels = self.resolved_fsq_levels()
        if levels is None:
            sizes = ", ".join(str(math.prod(v)) for v in RECOMMENDED_LEVELS.values())
            raise bad(
                "codebook_size",
                f"= {self.codebook_size} has no FSQ level set; set {_WHERE}.fsq_levels "
                f"(e.g. [8, 5, 5] for 200) or codebook_size to a power of two or one of {sizes}",
            )
        if math.prod(levels) != self.codebook_size:
            raise bad(
                "codebook_size",
                f"must equal prod(fsq_levels) = {math.prod(levels)} for kind = 'fsq', "
                f"got {self.codebook_size}",
            )

    def resolved_fsq_levels(self) -> tuple[int, ...] | None:
        """``fsq_levels``, or the levels derived from ``codebook_size`` (None if none fit)."""
        if self.fsq_levels:
            return tuple(self.fsq_levels)
        return fsq_levels_for(self.codebook_size)


def build_quantizer(config: QuantizerConfig) -> Quantizer:
    """The one factory: a ``QuantizerConfig`` -> the quantizer module it describes. With
    ``lookup_dim`` the kind's quantizer is built for the low-dimensional search space and
    wrapped in the learned projections."""
    build = QUANTIZERS.get(config.kind, f"{_WHERE}.kind")
    if not config.lookup_dim:
        return build(config)
    inner = build(dataclasses.replace(config, dim=config.lookup_dim, lookup_dim=0))
    return LowDimQuantizer(config.dim, inner)


def _options(config: QuantizerConfig) -> dict:
    """The options every codebook quantizer takes."""
    return dict(
        beta=config.beta,
        kmeans_init=config.kmeans_init,
        dead_code_threshold=config.dead_code_threshold,
        usage_decay=config.usage_decay,
        gradient=config.gradient,
    )


@QUANTIZERS.register("vq")
def _vq(config: QuantizerConfig) -> CodebookQuantizer:
    return VectorQuantizer(config.codebook_size, config.dim, **_options(config))


@QUANTIZERS.register("ema")
def _ema(config: QuantizerConfig) -> CodebookQuantizer:
    return EMAVectorQuantizer(
        config.codebook_size, config.dim, decay=config.decay, **_options(config)
    )


@QUANTIZERS.register("cosine")
def _cosine(config: QuantizerConfig) -> CodebookQuantizer:
    return CosineVectorQuantizer(config.codebook_size, config.dim, **_options(config))


@QUANTIZERS.register("residual")
def _residual(config: QuantizerConfig) -> Quantizer:
    levels = [_ema(config) for _ in range(config.levels)]  # EMA codebooks on each residual
    return ResidualVectorQuantizer(
        levels, beta=config.beta, gradient=config.gradient, dropout=config.quantizer_dropout
    )


@QUANTIZERS.register("fsq")
def _fsq(config: QuantizerConfig) -> Quantizer:
    return FSQ(config.resolved_fsq_levels(), config.dim)


def _lookup_free_options(config: QuantizerConfig) -> dict:
    return dict(
        beta=config.beta,
        entropy_weight=config.entropy_weight,
        batch_entropy_weight=config.entropy_batch_weight,
        temperature=config.entropy_temperature,
    )


@QUANTIZERS.register("lfq")
def _lfq(config: QuantizerConfig) -> Quantizer:
    return LFQ(config.codebook_size.bit_length() - 1, config.dim, **_lookup_free_options(config))


@QUANTIZERS.register("bsq")
def _bsq(config: QuantizerConfig) -> Quantizer:
    return BSQ(config.codebook_size.bit_length() - 1, config.dim, **_lookup_free_options(config))


@QUANTIZERS.register("simvq")
def _simvq(config: QuantizerConfig) -> CodebookQuantizer:
    return SimVQ(config.codebook_size, config.dim, **_options(config))
