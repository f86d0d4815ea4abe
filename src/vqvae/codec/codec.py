"""A trained run as a lossy codec: the VQ-VAE quantizes, the prior's conditionals drive a range
coder (``constriction``'s, with a categorical model per position), so each item is stored in
about its negative log-likelihood in bits.

Each item is one independent range-coded stream — its class label (uniform over the classes of
a conditional prior), then every code level in raster order (VQ-VAE-2: top, then bottom, whose
prior is conditioned on the top codes) — so an archive decodes in batches of any size, and
costs about 0.3 bytes of flushing per item (the trailing bytes the decoder does not need are
cut), plus a byte or two for the stream's length. Both sides compute the probabilities the
same way: the prior's cached incremental decoder (``AutoregressivePrior.decoder``, driven by
the one loop ``priors.base.autoregressive``) in float64, then ``tables.frequencies``. Decoded
codes are checked against a CRC the encoder stored; outputs are decoded by a float64 copy of
the model, so the 8-bit images written do not depend on the batch size either.

    codec = Codec.from_run("runs/mnist")
    data = codec.compress(images)               # (N, 1, 28, 28) in [0, 1] -> bytes
    indices, decoded = codec.decompress(data)   # [(N, 7, 7) codes], (N, 1, 28, 28)

A residual stack of sequences (L, T') is coded as one 2D map, levels as rows, by a prior
trained on such maps: raster order is level-major, so coding only the first k levels
(``levels=k``, ``vqvae compress --levels k`` or ``--bitrate``) is coding a prefix of the
positions, and costs exactly the prior's first k·T' conditionals — one model and one prior
serve every depth. The archive records the coded shape (k, T'); decoding sums k levels.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.codec.archive import Archive, ArchiveError, codes_crc
from vqvae.codec.tables import frequencies
from vqvae.errors import ConfigError, VQVAEError
from vqvae.models.audio_stream import check_hops, decode_in_chunks, encode_in_chunks
from vqvae.pipeline.families import FAMILIES, ModelFamily
from vqvae.pipeline.run import RunDir
from vqvae.priors.base import autoregressive

DEFAULT_BATCH = 64  # items coded together (the prior's batch)


def _constriction() -> Any:
    try:
        import constriction
    except ImportError as exc:  # an optional extra
        raise VQVAEError(
            "the codec needs the `constriction` package: pip install 'vqvae[codec]'"
        ) from exc
    return constriction


@dataclass
class Decompressed:
    """What an archive holds, decoded: codes per level (N, *shape), the outputs, and the
    labels, names and lengths it stored (None when it has none)."""

    indices: list[np.ndarray]
    outputs: np.ndarray
    labels: np.ndarray | None
    names: list[str] | None
    lengths: np.ndarray | None


class Codec:
    """A run's model and prior(s) as a codec (see the module docstring)."""

    def __init__(
        self,
        family: ModelFamily,
        model: nn.Module,
        priors: list[nn.Module],
        model_id: bytes,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.family, self.model, self.model_id = family, model.eval(), model_id
        self.levels = family.code_levels(model)
        if not self.levels:
            raise VQVAEError(f"model.kind = {family.kind!r} has no codes to entropy-code")
        for level, prior in zip(self.levels, priors, strict=True):
            if not getattr(prior, "exact_likelihood", True):
                raise VQVAEError(
                    f"{level.section}.kind = {prior.config.kind!r} has no exact likelihood to "
                    "drive an entropy coder; train an autoregressive prior (pixelcnn, transformer)"
                )
        self.priors = [p.eval() for p in priors]  # float32: the NLL, the choice of labels
        self._priors64 = [copy.deepcopy(p).double() for p in self.priors]  # the probabilities
        self._model64: nn.Module | None = None
        self.set_batch(batch)
        self.label_rows = self.priors[0].label_rows if self.priors[0].config.num_classes else 0

    @classmethod
    def from_run(cls, run_path: str | Path, batch: int = DEFAULT_BATCH) -> Codec:
        """The codec of a run folder with a trained model and prior(s)."""
        run = RunDir(run_path)
        config, _ = run.read_config()
        family = FAMILIES.get(config.model.kind, "model.kind")
        model = family.load_model(run)
        priors = family.load_priors(run, model)
        files = [run.require_model() / "model.safetensors"] + [
            run.require_prior(level.name) / "model.safetensors"
            for level in family.code_levels(model)
        ]
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.read_bytes())
        return cls(family, model, priors, digest.digest()[:8], batch)

    def set_batch(self, batch: int) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"--batch must be an integer >= 1, got {batch!r}")
        self.batch = batch

    # ------------------------------------------------------------------ the library
    def encode(self, inputs: np.ndarray, chunk: int | None = None) -> list[np.ndarray]:
        """Items (as the model's encoder takes them) -> codes, one (N, *shape) array a level.
        ``chunk``: run a causal model's encoder as it streams, ``chunk`` hops at a time (the
        same codes)."""
        if chunk is None:
            return self.family.encode(self.model, inputs)
        self.check_chunk(chunk)
        x = torch.from_numpy(np.asarray(inputs, np.float32))
        codes = [
            encode_in_chunks(self.model, x[i : i + self.batch], chunk)
            for i in range(0, len(x), self.batch)
        ]
        return [torch.cat(codes).numpy()]

    def check_chunk(self, chunk: int) -> None:
        """A ``chunk`` of hops to stream by: an integer >= 1, and a model that streams (one
        that states its ``latency_samples``: a causal audio model)."""
        check_hops(chunk)
        if getattr(self.model, "latency_samples", None) is None:
            raise ConfigError(
                f"--chunk needs a causal audio model (model.causal = true); this run's model "
                f"(model.kind = {self.family.kind!r}) does not stream"
            )

    def compress(
        self,
        inputs: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        names: list[str] | None = None,
        lengths: np.ndarray | None = None,
        levels: int | None = None,
    ) -> bytes:
        """Items -> an archive. ``labels`` (N,) for a conditional prior (None: each item gets
        the class its codes cost the fewest bits under); ``names`` and ``lengths`` (audio:
        real samples) are stored for the decoder's files; ``levels``: code only the first
        that many residual levels (None: all)."""
        codes = self.truncate(self.encode(inputs), self.depth(levels))
        return self.compress_codes(codes, labels, names=names, lengths=lengths)

    # ------------------------------------------------------------------ residual depth
    @property
    def residual_levels(self) -> int:
        """L of the model's residual stack; 0 when its codes have none (no --levels)."""
        return max((level.residual_levels for level in self.levels), default=0)

    def depth(self, levels: int | None = None, bitrate: float | None = None) -> int | None:
        """How many residual levels to code: ``levels`` (1 <= levels <= L), or for
        ``bitrate`` (bits per second) the largest k whose raw rate before entropy coding,
        codes per second · k · log2 K, is at most it (the archive is smaller: it costs the
        prior's NLL); None, all L, when neither is given. A ``ConfigError`` naming the
        option for a value out of range or a model without residual levels."""
        if levels is None and bitrate is None:
            return None
        if levels is not None and bitrate is not None:
            raise ConfigError("give --levels or --bitrate, not both")
        option = "--levels" if levels is not None else "--bitrate"
        depth = self.residual_levels
        if not depth:
            raise ConfigError(
                f"{option} applies to a residual quantizer (model.quantizer.kind = 'residual'); "
                "this run's codes have one level"
            )
        if levels is not None:
            if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= depth:
                raise ConfigError(
                    f"--levels must be in [1, {depth}] (the model's levels), got {levels}"
                )
            return levels
        full = getattr(self.model, "bits_per_second", None)
        if full is None:
            raise ConfigError("--bitrate needs a model with a bitrate per second; use --levels")
        per_level = full / depth  # codes per second · log2 K
        if not (math.isfinite(bitrate) and bitrate >= per_level):
            raise ConfigError(
                f"--bitrate must be at least one level's raw rate, {per_level:g} bit/s, "
                f"got {bitrate}"
            )
        return min(depth, math.floor(bitrate / per_level * (1 + 1e-12)))  # 2500·k: k

    def truncate(self, codes: list[np.ndarray], levels: int | None) -> list[np.ndarray]:
        """Codes with every residual stack cut to its first ``levels`` levels (None: as they
        are). The first k levels of an L-level encoding are the k-level encoding."""
        if levels is None:
            return codes
        return [
            c[:, :levels] if level.residual_levels else c
            for c, level in zip(codes, self.levels, strict=True)
        ]

    def decompress(self, data: bytes) -> tuple[list[np.ndarray], np.ndarray]:
        """An archive -> (codes per level, decoded outputs)."""
        out = self.decompress_archive(data)
        return out.indices, out.outputs

    # ------------------------------------------------------------------ coding
    def compress_codes(
        self,
        codes: list[np.ndarray],
        labels: np.ndarray | None = None,
        *,
        names: list[str] | None = None,
        lengths: np.ndarray | None = None,
    ) -> bytes:
        """Codes (one (N, *shape) array per level) -> an archive (see ``compress``)."""
        n = self._check_codes(codes)
        labels = self.coded_labels(codes, labels)
        if names is not None and len(names) != n:
            raise ValueError(f"{len(names)} names for {n} items")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} items")
        streams: list[bytes] = []
        for i in range(0, n, self.batch):
            part = [torch.from_numpy(np.asarray(c[i : i + self.batch], np.int64)) for c in codes]
            lab = None if labels is None else torch.from_numpy(labels[i : i + self.batch])
            streams += self._encode_batch(part, lab)
        archive = Archive(
            self.model_id,
            [tuple(c.shape[1:]) for c in codes],  # a residual stack: (k, ...), k levels coded
            [level.codebook_size for level in self.levels],
            streams,
            codes_crc(codes, labels),
            labels is not None,
            None if names is None else list(names),
            None if lengths is None else [int(x) for x in lengths],
        )
        return archive.to_bytes()

    def read(self, data: bytes, source: str = "archive") -> Archive:
        """Parse ``data`` and check it belongs to this model (``ArchiveError`` otherwise)."""
        archive = Archive.from_bytes(data, source)
        if archive.model_id != self.model_id:
            raise ArchiveError(
                f"{source}: made with another model or prior (id {archive.model_id.hex()}; "
                f"this run's is {self.model_id.hex()})"
            )
        sizes = [level.codebook_size for level in self.levels]
        if archive.codebook_sizes != sizes or not all(
            _fits(shape, level) for shape, level in zip(archive.shapes, self.levels, strict=True)
        ):
            raise ArchiveError(f"{source}: code shapes {archive.shapes} do not match the model's")
        if archive.labelled != bool(self.label_rows):
            raise ArchiveError(f"{source}: class labels do not match the prior's")
        return archive

    def decompress_archive(
        self, data: bytes, source: str = "archive", chunk: int | None = None
    ) -> Decompressed:
        """Decode every item of an archive (in batches of ``self.batch``) and its outputs
        (``chunk``: see ``decode``)."""
        archive = self.read(data, source)
        n = len(archive)
        codes: list[list[Tensor]] = [[] for _ in self.levels]
        labels: list[Tensor] = []
        for i in range(0, n, self.batch):
            part, lab = self._decode_batch(
                archive.streams[i : i + self.batch], source, archive.shapes
            )
            for j, c in enumerate(part):
                codes[j].append(c)
            if lab is not None:
                labels.append(lab)
        indices = [
            torch.cat(c).numpy() if c else np.zeros((0, *shape), np.int64)
            for c, shape in zip(codes, archive.shapes, strict=True)
        ]
        label_array = torch.cat(labels).numpy() if labels else None
        if archive.labelled and label_array is None:
            label_array = np.zeros(0, np.int64)
        if codes_crc(indices, label_array) != archive.codes_crc:
            raise ArchiveError(
                f"{source}: the decoded codes do not match the encoder's (codes checksum): "
                "this machine's prior computed other probabilities than the encoder's"
            )
        lengths = None if archive.lengths is None else np.asarray(archive.lengths, np.int64)
        outputs = self.decode(indices, chunk)
        return Decompressed(indices, outputs, label_array, archive.names, lengths)

    def decode(self, indices: list[np.ndarray], chunk: int | None = None) -> np.ndarray:
        """Codes -> outputs, by a float64 copy of the model: the same outputs (to 1e-12)
        whatever the batch size, so 8-bit files written from them are reproducible.
        ``chunk``: run a causal model's decoder as it streams, ``chunk`` codes at a time."""
        if chunk is not None:
            self.check_chunk(chunk)
        if self._model64 is None:
            self._model64 = copy.deepcopy(self.model).double().eval()
        if not len(indices[0]):
            return np.zeros((0,), np.float32)
        if chunk is None:
            return self.family.decode(self._model64, indices).astype(np.float32)
        codes = torch.from_numpy(indices[0])
        out = [
            self.family.finish(decode_in_chunks(self._model64, codes[i : i + self.batch], chunk))
            for i in range(0, len(codes), self.batch)
        ]
        return torch.cat(out).numpy().astype(np.float32)

    # ------------------------------------------------------------------ measurements
    @torch.no_grad()
    def item_bits(self, codes: list[np.ndarray], labels: np.ndarray | None) -> np.ndarray:
        """The prior's NLL of each item's codes, in bits (N,) (float32 ``prior_logits``, the
        held-out NLL's computation), given its label."""
        n = len(codes[0])
        out = np.zeros(n)
        for i in range(0, n, self.family.batch):
            part = [
                torch.from_numpy(np.asarray(c[i : i + self.family.batch], np.int64)) for c in codes
            ]
            lab = None if labels is None else torch.from_numpy(labels[i : i + self.family.batch])
            for logits, c in zip(self._logits(part, lab), part, strict=True):
                nats = F.cross_entropy(logits, c, reduction="none")  # (B, *shape)
                out[i : i + len(c)] += nats.flatten(1).sum(1).double().numpy() / math.log(2)
        return out

    def _logits(self, codes: list[Tensor], labels: Tensor | None) -> list[Tensor]:
        return self.family.prior_logits(self.model, self.priors, codes, labels)

    def coded_labels(self, codes: list[np.ndarray], labels: np.ndarray | None) -> np.ndarray | None:
        """The labels an archive of ``codes`` holds: none for an unconditional prior (given
        labels are dropped), ``labels`` checked, or else each item's ``best_labels``."""
        if not self.label_rows:
            return None
        n = self._check_codes(codes)
        return self.best_labels(codes) if labels is None else self._check_labels(labels, n)

    def best_labels(self, codes: list[np.ndarray]) -> np.ndarray:
        """For a conditional prior: each item's class whose codes cost the fewest bits."""
        n = len(codes[0])
        classes = self.priors[0].config.num_classes
        bits = np.stack([self.item_bits(codes, np.full(n, c, np.int64)) for c in range(classes)])
        return bits.argmin(axis=0).astype(np.int64)

    # ------------------------------------------------------------------ internals
    def _check_codes(self, codes: list[np.ndarray]) -> int:
        if len(codes) != len(self.levels):
            raise ValueError(f"{len(codes)} code arrays for {len(self.levels)} levels")
        n = len(codes[0])
        for c, level in zip(codes, self.levels, strict=True):
            if c.ndim != 1 + len(level.shape) or len(c) != n or not _fits(c.shape[1:], level):
                what = "(N, k <= L, ...)" if level.residual_levels else "(N, *shape)"
                raise ValueError(f"codes of shape {tuple(c.shape)}, expected {what}, {level.shape}")
            if c.size and (int(c.min()) < 0 or int(c.max()) >= level.codebook_size):
                raise ValueError(f"codes outside [0, {level.codebook_size})")
        return n

    def _check_labels(self, labels: np.ndarray, n: int) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be {n} integers, got {labels.dtype} {labels.shape}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= self.label_rows):
            raise ConfigError(f"labels must lie in [0, {self.label_rows})")
        return labels.astype(np.int64)

    def _levels(
        self, n: int, labels: Tensor | None, choose_at: Any, shapes: list[tuple[int, ...]]
    ) -> list[Tensor]:
        """Run every level's prior over ``n`` items in order (a conditioned level after the
        level it reads): ``choose_at(j)`` gives level j's ``choose(logits, t) -> codes``.
        ``shapes``: each level's coded shape, the level's own or, for a residual stack, its
        first k rows: the decoder runs over the whole map and stops after that prefix."""
        out: list[Tensor] = []
        for j, (level, prior) in enumerate(zip(self.levels, self._priors64, strict=True)):
            codes = torch.zeros(n, math.prod(shapes[j]), dtype=torch.long)
            above = level.conditioned_on
            cond = None if above is None else out[above].reshape(n, *shapes[above])
            with torch.no_grad():
                decoder = prior.decoder(n, level.shape, labels, cond)
                autoregressive(decoder, codes, 0, choose_at(j))
            out.append(codes.reshape(n, *shapes[j]))
        return out

    def _encode_batch(self, codes: list[Tensor], labels: Tensor | None) -> list[bytes]:
        n = len(codes[0])
        flat = [c.reshape(n, -1) for c in codes]
        tables = [
            np.empty((n, f.shape[1], level.codebook_size), np.float32)  # integers < 2^24
            for f, level in zip(flat, self.levels, strict=True)
        ]

        def choose_at(j: int):
            def choose(logits: Tensor, t: int) -> Tensor:
                tables[j][:, t] = frequencies(logits)
                return flat[j][:, t]

            return choose

        self._levels(n, labels, choose_at, [tuple(c.shape[1:]) for c in codes])
        streams = []
        for b in range(n):
            parts = [(f[b].numpy(), tab[b]) for f, tab in zip(flat, tables, strict=True)]
            if labels is not None:
                parts.insert(0, (labels[b : b + 1].numpy(), np.ones((1, self.label_rows))))
            streams.append(_encode_item(parts))
        return streams

    def _decode_batch(
        self, streams: list[bytes], source: str, shapes: list[tuple[int, ...]]
    ) -> tuple[list[Tensor], Tensor | None]:
        c = _constriction()
        model = c.stream.model.Categorical(perfect=False)
        decoders = [c.stream.queue.RangeDecoder(_words(s)) for s in streams]

        def decode(d: Any, table: np.ndarray) -> int:
            try:
                return int(d.decode(model, table)[0])
            except Exception as exc:  # constriction: a stream that is not valid range coding
                raise ArchiveError(f"{source}: corrupted stream ({exc})") from exc

        labels = None
        if self.label_rows:
            uniform = np.ones((1, self.label_rows))
            labels = torch.tensor([decode(d, uniform) for d in decoders], dtype=torch.long)

        def choose_at(j: int):
            def choose(logits: Tensor, t: int) -> Tensor:
                f = frequencies(logits)
                return torch.tensor(
                    [decode(d, f[b : b + 1]) for b, d in enumerate(decoders)], dtype=torch.long
                )

            return choose

        return self._levels(len(streams), labels, choose_at, shapes), labels


def _fits(shape: tuple[int, ...], level: Any) -> bool:
    """Whether codes of one item's ``shape`` are ``level``'s: its shape, or for a residual
    stack (L, ...) the first k levels, (k, ...) with 1 <= k <= L."""
    shape = tuple(shape)
    if not level.residual_levels or len(shape) != len(level.shape):
        return shape == tuple(level.shape)
    return 1 <= shape[0] <= level.shape[0] and shape[1:] == tuple(level.shape[1:])


def _encode_item(parts: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """One item's symbols and their frequency tables -> its stream: the range coder's words,
    big-endian, with the trailing bytes cut that a decoder padding with 0xFF does not need
    (checked by decoding: only the tables are needed for that, not the prior)."""
    c = _constriction()
    model = c.stream.model.Categorical(perfect=False)
    parts = [(s.astype(np.int32), t.astype(np.float64)) for s, t in parts]
    encoder = c.stream.queue.RangeEncoder()
    for symbols, table in parts:
        encoder.encode(symbols, model, table)
    data = encoder.get_compressed().astype(">u4").tobytes()

    def decodes(candidate: bytes) -> bool:
        try:
            decoder = c.stream.queue.RangeDecoder(_words(candidate))
            return all(
                np.array_equal(decoder.decode(model, table), symbols) for symbols, table in parts
            )
        except Exception:  # noqa: BLE001 - running out of data: this cut is too short
            return False

    while data and decodes(data[:-1]):
        data = data[:-1]
    return data


def _words(stream: bytes) -> np.ndarray:
    """A stream's bytes, padded with 0xFF bytes to whole 32-bit big-endian words -> uint32
    words. (Measured: with constriction's range coder, padding with ones lets the encoder cut
    all but about 0.3 bytes above the information content; padding with zeros almost nothing.)"""
    padded = stream + b"\xff" * (-len(stream) % 4)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)
