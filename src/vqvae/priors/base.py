"""What every prior shares (``Prior``: input checks, label dropout, the checks of the one
sampling interface) and the one autoregressive sampling loop (``AutoregressivePrior``).

An autoregressive prior models ``p(z) = Π_t p(z_t | z_<t [, class] [, cond])`` over code maps
in raster order: an exact likelihood (``exact_likelihood = True``), which the held-out NLL and
an entropy coder read from ``forward``'s logits. A prior without one (the masked MaskGIT prior,
``priors/maskgit.py``) subclasses ``Prior`` directly and says ``exact_likelihood = False``.
Autoregressive subclasses provide
``forward(indices, labels=None, cond=None) -> logits (B, K, *grid)``, ``_check_grid`` and
``_decoder`` (an object that returns the logits of one position given the codes drawn so far,
either by recomputing the network or from a cache). Everything else is here:

* ``training_losses(batch)``: mean cross-entropy; with ``label_dropout > 0`` each label is
  replaced by the extra "null" class with that probability during training, so the same network
  also learns the unconditional distribution (classifier-free guidance, Ho & Salimans 2022).
* ``sample(...)``: one interface for every prior — temperature, top-k, top-p (all through
  ``sample_from_logits``), class labels, classifier-free guidance, completion of a given prefix,
  a generator for reproducibility, and cached or full-recompute decoding.

Guidance convention: ``logits = u + s · (c − u)`` with ``c`` the conditional and ``u`` the
null-class logits, so ``s = 0`` is unconditional sampling, ``s = 1`` plain conditional sampling
and ``s > 1`` strengthens the class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae import configs
from vqvae.errors import ConfigError
from vqvae.nets.modes import eval_mode
from vqvae.priors.sampling import _check_options, sample_from_logits

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_common_config(config: Any) -> None:
    """Checks of the fields every prior config has: codebook_size, num_classes, label_dropout."""
    if not is_int(config.codebook_size) or config.codebook_size < 1:
        raise ConfigError(
            f"prior.codebook_size must be an integer >= 1, got {config.codebook_size!r}"
        )
    if not is_int(config.num_classes) or config.num_classes < 0:
        raise ConfigError(
            f"prior.num_classes must be an integer >= 0 (0 = unconditional), "
            f"got {config.num_classes!r}"
        )
    p = config.label_dropout
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
        raise ConfigError(f"prior.label_dropout must be in [0, 1), got {p!r}")


def fill_unset(config: Any, where: str, **sizes: int) -> Any:
    """``config`` with each field of ``sizes`` that is None set to its value; fields already
    set (by a user, a config file, a saved run) are kept. The original is not mutated."""
    unset = {name: value for name, value in sizes.items() if getattr(config, name) is None}
    return configs.replace(config, where, **unset) if unset else config


def check_size(config: Any, where: str, name: str, minimum: int = 1) -> None:
    """A size field is None (sized from the codes) or an integer >= ``minimum``."""
    value = getattr(config, name)
    if value is not None and (not is_int(value) or value < minimum):
        raise ConfigError(f"{where}.{name} must be an integer >= {minimum}, got {value!r}")


# Sizes fitted to the codes keep at most this many parameters per training code (when the
# number of training maps is known): on the built-in digits (1,497 maps of 2×2 codes, K = 512)
# only a PixelCNN under this bound stayed below the uniform 9 bits per held-out code after
# train-prior's 5,000 steps (benchmarks/results/prior_sizing*.json).
PARAMS_PER_TRAIN_CODE = 2


def pow2_between(x: float, low: int, high: int) -> int:
    """The power of two nearest ``x`` (in log scale), clamped to [low, high]."""
    return int(min(high, max(low, 2 ** round(math.log2(max(x, 1.0))))))


class Decoder(Protocol):
    """Incremental access to a prior's logits during sampling."""

    def logits(self, codes: Tensor, t: int) -> Tensor:
        """codes (B, N) in raster order, positions < t filled -> logits (B, K) at position t.

        Called with t increasing; positions < t never change between calls."""
        ...


def autoregressive(
    decoder: Decoder,
    codes: Tensor,
    start: int,
    choose: Callable[[Tensor, int], Tensor],
    copies: int = 1,
) -> Tensor:
    """The one autoregressive loop of every prior: for t = start .. N-1, the decoder's logits
    at t (B·copies, K) — of ``copies`` stacked copies of ``codes`` (B, N), e.g. conditional and
    null-class rows for guidance — go to ``choose(logits, t)``, whose codes (B,) are written to
    ``codes[:, t]`` before position t + 1 is computed. Sampling draws the codes; an entropy
    coder (``vqvae.codec``) returns the codes it encodes or decodes. Returns ``codes``."""
    for t in range(start, codes.shape[1]):
        logits = decoder.logits(codes.repeat(copies, 1) if copies > 1 else codes, t)  # (B', K)
        codes[:, t] = choose(logits, t)
    return codes


@dataclass
class Draw:
    """A checked ``sample`` request: what a sampler starts from.

    codes: (n, N) int64 in raster order, the prefix filled in, zeros elsewhere; ``start`` = the
    prefix length. labels / cond: for the network's batch (2n rows when ``guided``: the
    conditional rows first, then the same maps with the null class)."""

    grid: tuple[int, ...]
    codes: Tensor
    start: int
    labels: Tensor | None
    cond: Any
    guided: bool


class Prior(nn.Module):
    """Base class of the priors (see the module docstring). ``self.config`` has at least
    ``codebook_size``, ``num_classes`` and ``label_dropout``."""

    config: Any
    # True: forward's logits at each position are conditionals p(z_t | z_<t) of one
    # factorisation, so they give the held-out NLL and an entropy coder's probabilities.
    exact_likelihood: bool = True
    # True: ``sample`` draws a whole map in a chosen number of network passes (``steps=``).
    parallel_steps: bool = False

    # ------------------------------------------------------------------ fitting to codes
    @classmethod
    def fitted_config(
        cls,
        config: Any,
        *,
        grid: tuple[int, ...],
        codebook_size: int,
        num_classes: int,
        cond_codebook_size: int = 0,
        train_items: int | None = None,
    ) -> Any:
        """``config`` with what the codes decide filled in: the vocabulary, the classes, and
        whatever the prior needs to know of the code grid (a Transformer's 1D layout); a prior
        whose sizes may be left None sizes them from the grid, K and ``train_items`` (the
        number of training code maps, when known: a small data set gets a small prior). Raises
        ``ConfigError`` for codes this prior cannot model (by default: anything but 2D maps, or
        a conditioning code map)."""
        if cond_codebook_size:
            raise ConfigError(f"prior.kind = {config.kind!r} cannot be conditioned on a code map")
        if len(grid) != 2:
            raise ConfigError(f"prior.kind = {config.kind!r} models 2D code maps, not {grid}")
        return configs.replace(
            config, "prior", codebook_size=codebook_size, num_classes=num_classes
        )

    # ------------------------------------------------------------------ labels
    @property
    def null_label(self) -> int | None:
        """The index of the "no class" label, or None when the prior has none."""
        c = self.config
        return c.num_classes if c.num_classes > 0 and c.label_dropout > 0 else None

    @property
    def label_rows(self) -> int:
        """Rows of a label embedding table: the classes, plus the null class when there is one."""
        return self.config.num_classes + (self.null_label is not None)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_labels(self, labels: Tensor | int | None, batch: int) -> Tensor | None:
        """-> (batch,) int64 on the model's device (the null class for None when there is one),
        or None for an unconditional prior."""
        n_cls = self.config.num_classes
        if labels is None:
            if n_cls == 0:
                return None
            if self.null_label is None:
                raise ConfigError(
                    "labels are required: the prior is class-conditional "
                    f"(prior.num_classes={n_cls}) and was trained without label dropout"
                )
            return torch.full((batch,), self.null_label, dtype=torch.long, device=self.device)
        if n_cls == 0:
            raise ConfigError(
                "labels were given but the prior is unconditional (prior.num_classes=0)"
            )
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
        if labels.dim() == 0:
            labels = labels.expand(batch)
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
        if labels.numel() > 0:
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= self.label_rows:  # the null class (= num_classes) is allowed
                raise ConfigError(
                    f"labels must lie in [0, prior.num_classes={n_cls}), got values in [{lo}, {hi}]"
                )
        return labels.to(device=self.device, dtype=torch.long)

    # ----------------------------------------------------------------- indices
    def _check_indices(self, indices: Tensor) -> tuple[int, ...]:
        """Check dtype, range and grid of ``indices`` (B, *grid); return the grid."""
        if not isinstance(indices, Tensor) or indices.dtype not in _INT_DTYPES:
            got = indices.dtype if isinstance(indices, Tensor) else type(indices).__name__
            raise ValueError(f"indices must be an integer tensor (B, *grid), got {got}")
        if indices.dim() < 2:
            raise ValueError(f"indices must have shape (B, *grid), got {tuple(indices.shape)}")
        grid = self._check_grid(tuple(indices.shape[1:]))
        if indices.numel() > 0:
            lo, hi = int(indices.min()), int(indices.max())
            k = self.config.codebook_size
            if lo < 0 or hi >= k:
                raise ConfigError(
                    f"indices must lie in [0, prior.codebook_size={k}), got values in [{lo}, {hi}]"
                )
        return grid

    def _check_grid(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        """Validate a grid for this prior (raise ValueError) and return it as a tuple of ints."""
        raise NotImplementedError

    def _check_cond(self, cond: Tensor | None, batch: int, grid: tuple[int, ...]) -> Any:
        """Validate and prepare the conditioning input (None unless the prior supports one)."""
        if cond is not None:
            raise ConfigError(f"{type(self).__name__} takes no conditioning input (cond)")
        return None

    # ---------------------------------------------------------------- training
    def _dropped_labels(self, labels: Tensor | None) -> Tensor | None:
        """In training mode, ``labels`` with each replaced by the null class with probability
        ``label_dropout`` (classifier-free guidance; torch's global generator, which the loop
        seeds); unchanged otherwise."""
        if labels is not None and self.training and self.null_label is not None:
            drop = torch.rand(labels.shape, device=labels.device) < self.config.label_dropout
            labels = torch.where(drop, torch.full_like(labels, self.null_label), labels)
        return labels

    def training_losses(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Mean cross-entropy (nats per code) of ``batch = (indices, labels or None[, cond])``.

        In training mode labels are replaced by the null class with probability
        ``label_dropout`` (drawn from torch's global generator, which the loop seeds)."""
        indices, labels, *rest = batch
        cond = rest[0] if rest else None
        logits = self(indices, self._dropped_labels(labels), cond)  # (B, K, *grid)
        loss = F.cross_entropy(logits, indices.long())  # mean over every code of the batch
        return {"loss": loss, "bits_per_code": loss.detach() / math.log(2)}

    # ---------------------------------------------------------------- sampling
    def _prepare_draw(
        self,
        n: int,
        grid: tuple[int, ...],
        labels: Tensor | int | None,
        *,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        guidance_scale: float | None,
        prefix: Tensor | None,
        cond: Tensor | None,
    ) -> Draw:
        """The checks of ``sample``'s arguments (every prior's), and what a sampler starts from."""
        if not is_int(n) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if not isinstance(grid, tuple | list) or not all(is_int(s) and s >= 1 for s in grid):
            raise ValueError(f"grid must be a tuple of positive integers, got {grid!r}")
        grid = self._check_grid(tuple(int(s) for s in grid))
        _check_options(temperature, top_k, top_p)
        guided = guidance_scale is not None
        if guided:
            s = guidance_scale
            if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
                raise ValueError(f"guidance_scale must be a finite number, got {s!r}")
            if self.null_label is None:
                raise ConfigError(
                    "classifier-free guidance needs a class-conditional prior trained with "
                    "label dropout (prior.label_dropout > 0)"
                )
            if labels is None:
                raise ConfigError("classifier-free guidance needs labels")
        labels = self._check_labels(labels, n)
        codes = torch.zeros(n, math.prod(grid), dtype=torch.long, device=self.device)
        start = 0
        if prefix is not None:
            start = self._check_prefix(prefix, n, grid)
            codes[:, :start] = prefix.reshape(n, start).to(self.device)
        if guided:  # one batch: conditional rows first, then the same maps with the null class
            labels = torch.cat([labels, torch.full_like(labels, self.null_label)])
            cond = None if cond is None else torch.cat([cond, cond])
        cond = self._check_cond(cond, 2 * n if guided else n, grid)
        return Draw(grid, codes, start, labels, cond, guided)

    def sample(
        self,
        n: int,
        grid: tuple[int, ...],
        labels: Tensor | int | None = None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance_scale: float | None = None,
        prefix: Tensor | None = None,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
        cached: bool = True,
        steps: int | None = None,
    ) -> Tensor:
        """Draw ``n`` code maps of shape ``grid`` -> (n, *grid) int64.

        labels: (n,) classes (or one int for all) of a conditional prior; None draws from the
            null class of a prior trained with label dropout (unconditional samples).
        guidance_scale: classifier-free guidance ``u + s·(c − u)`` (needs labels and a prior
            trained with ``label_dropout > 0``); None = no guidance (one network pass per step).
        prefix: (n, L) codes in raster order (or (n, r, W) whole rows of a 2D grid) kept
            unchanged; the rest is drawn (completion of a partial map).
        cond: the conditioning input of a prior that has one (e.g. top codes for VQ-VAE-2).
        generator: the source of randomness (on the model's device); the same seed gives the
            same samples, cached or not (up to floating-point ties).
        cached: decoding from cached activations where the prior has them; False recomputes.
        steps: network passes for a whole map, for a prior that decodes in parallel steps
            (``parallel_steps``); None = its default. An autoregressive prior takes one step
            per position and refuses a number.
        """
        raise NotImplementedError

    def _check_prefix(self, prefix: Tensor, n: int, grid: tuple[int, ...]) -> int:
        if not isinstance(prefix, Tensor) or prefix.dtype not in _INT_DTYPES:
            raise ValueError("prefix must be an integer tensor (n, L) of codes in raster order")
        if prefix.dim() < 2 or prefix.shape[0] != n:
            raise ValueError(f"prefix must have shape ({n}, L), got {tuple(prefix.shape)}")
        if prefix.dim() > 2 and tuple(prefix.shape[2:]) != grid[1:]:
            raise ValueError(
                f"prefix of whole rows must have shape ({n}, r, {', '.join(map(str, grid[1:]))}), "
                f"got {tuple(prefix.shape)}"
            )
        length = math.prod(prefix.shape[1:])
        if length > math.prod(grid):
            raise ValueError(f"prefix has {length} codes, more than the grid {grid} holds")
        if prefix.numel() and (
            int(prefix.min()) < 0 or int(prefix.max()) >= self.config.codebook_size
        ):
            raise ConfigError(f"prefix codes must lie in [0, {self.config.codebook_size})")
        return length


class AutoregressivePrior(Prior):
    """A prior that factorises in raster order; draws one position per network call."""

    exact_likelihood = True

    @torch.no_grad()
    def sample(
        self,
        n: int,
        grid: tuple[int, ...],
        labels: Tensor | int | None = None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance_scale: float | None = None,
        prefix: Tensor | None = None,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
        cached: bool = True,
        steps: int | None = None,
    ) -> Tensor:
        """``Prior.sample``, in raster order: sampling continues at the prefix's end, one
        position per step; ``cached``: incremental decoding from cached activations."""
        if steps is not None:
            raise ConfigError(
                f"steps: prior.kind = {self.config.kind!r} draws one position per step "
                "(a number of steps applies to a parallel-decoding prior, e.g. maskgit)"
            )
        draw = self._prepare_draw(
            n,
            grid,
            labels,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            guidance_scale=guidance_scale,
            prefix=prefix,
            cond=cond,
        )
        grid, codes, guided = draw.grid, draw.codes, draw.guided
        positions = codes.shape[1]
        if n == 0 or draw.start == positions:
            return codes.reshape(n, *grid)
        batch = 2 * n if guided else n

        def draw_codes(logits: Tensor, t: int) -> Tensor:  # (batch, K) -> (n,)
            if guided:
                c, u = logits.chunk(2)
                logits = u + guidance_scale * (c - u)
            return sample_from_logits(
                logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
            )

        with eval_mode(self):
            decoder = self._decoder(batch, grid, draw.labels, draw.cond, cached)
            autoregressive(decoder, codes, draw.start, draw_codes, copies=2 if guided else 1)
        return codes.reshape(n, *grid)

    def _decoder(
        self, batch: int, grid: tuple[int, ...], labels: Tensor | None, cond: Any, cached: bool
    ) -> Decoder:
        raise NotImplementedError

    def decoder(
        self,
        batch: int,
        grid: tuple[int, ...],
        labels: Tensor | int | None = None,
        cond: Tensor | None = None,
        *,
        cached: bool = True,
    ) -> Decoder:
        """The incremental decoder ``sample`` drives, for ``batch`` maps of shape ``grid``
        (labels and ``cond`` checked as ``sample`` checks them): what an entropy coder runs
        through ``autoregressive``, choosing each code from its logits. Use it in eval mode."""
        grid = self._check_grid(tuple(grid))
        labels = self._check_labels(labels, batch)
        return self._decoder(batch, grid, labels, self._check_cond(cond, batch, grid), cached)
