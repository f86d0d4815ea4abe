"""The archive format of ``vqvae compress`` (version 1). All integers are unsigned LEB128
varints unless a width is given; byte order of fixed-width fields is big-endian.

    magic        4   b"\\x89VQZ"
    version      1   1
    model id     8   the first 8 bytes of SHA-256 over the model's and every prior's weights
    flags        1   bit 0: a class label leads each item's stream; bit 1: item names;
                     bit 2: item lengths (audio: real samples)
    items        varint
    levels       varint, then per level: K, the number of dimensions, each dimension (one
                 item's coded codes; a residual stack (L, T') coded to its first k levels
                 records (k, T'), so the archive says how many levels to decode)
    [lengths]    one varint per item
    [names]      per item: byte length, UTF-8
    stream sizes one varint per item (bytes)
    streams      each item's range-coded stream: [label], then every level's codes in raster
                 order, 32-bit words big-endian, trailing bytes the decoder does not need cut
                 (it pads with 0xFF bytes)
    codes crc    4   CRC-32 of the codes and labels the encoder coded (a decoder whose
                     probabilities differed would decode others: it is caught, not written)
    crc          4   CRC-32 of everything before it

The *payload* is the stream sizes and the streams; the rest is the header.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from vqvae.errors import DataError

MAGIC = b"\x89VQZ"
VERSION = 1
_LABELS, _NAMES, _LENGTHS = 1, 2, 4


class ArchiveError(DataError):
    """A file that is not a readable archive of this model (names the file and the problem)."""


@dataclass
class Archive:
    model_id: bytes
    shapes: list[tuple[int, ...]]  # one item's codes, per level
    codebook_sizes: list[int]
    streams: list[bytes]
    codes_crc: int
    labelled: bool = False
    names: list[str] | None = None
    lengths: list[int] | None = None
    payload_bytes: int = field(default=0, compare=False)  # set by to_bytes / from_bytes

    def __len__(self) -> int:
        return len(self.streams)

    def to_bytes(self) -> bytes:
        flags = (
            (_LABELS if self.labelled else 0)
            | (_NAMES if self.names is not None else 0)
            | (_LENGTHS if self.lengths is not None else 0)
        )
        out = bytearray(MAGIC + bytes([VERSION]) + self.model_id + bytes([flags]))
        out += varint(len(self.streams)) + varint(len(self.shapes))
        for k, shape in zip(self.codebook_sizes, self.shapes, strict=True):
            out += varint(k) + varint(len(shape)) + b"".join(varint(d) for d in shape)
        for n in self.lengths or []:
            out += varint(n)
        for name in self.names or []:
            raw = name.encode("utf-8")
            out += varint(len(raw)) + raw
        payload = b"".join(varint(len(s)) for s in self.streams) + b"".join(self.streams)
        self.payload_bytes = len(payload)
        out += payload + self.codes_crc.to_bytes(4, "big")
        return bytes(out + zlib.crc32(out).to_bytes(4, "big"))

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> Archive:
        """Parse and check an archive; ``ArchiveError`` (naming ``source``) for an empty,
        truncated, corrupted or foreign file, or one of a newer format version."""
        if not data:
            raise ArchiveError(f"{source}: empty file, not a vqvae archive")
        if not MAGIC.startswith(data[:4]):
            raise ArchiveError(f"{source}: not a vqvae archive (no VQZ magic number)")
        if len(data) < 5 + 8 + 1 + 8:
            raise ArchiveError(f"{source}: truncated archive ({len(data)} bytes)")
        if data[4] != VERSION:
            raise ArchiveError(
                f"{source}: archive format version {data[4]}; this vqvae reads version {VERSION}"
            )
        if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "big"):
            raise ArchiveError(
                f"{source}: checksum mismatch: the archive is truncated or corrupted"
            )
        r = _Reader(data, 5, len(data) - 8, source)
        model_id, flags = r.take(8), r.take(1)[0]
        items, n_levels = r.varint(), r.varint()
        sizes, shapes = [], []
        for _ in range(n_levels):
            sizes.append(r.varint())
            shapes.append(tuple(r.varint() for _ in range(r.varint())))
        lengths = [r.varint() for _ in range(items)] if flags & _LENGTHS else None
        names = None
        if flags & _NAMES:
            try:
                names = [r.take(r.varint()).decode("utf-8") for _ in range(items)]
            except UnicodeDecodeError as exc:
                raise ArchiveError(f"{source}: corrupted item names ({exc})") from exc
        start = r.pos
        stream_sizes = [r.varint() for _ in range(items)]
        streams = [r.take(n) for n in stream_sizes]
        if r.pos != r.end:
            raise ArchiveError(f"{source}: {r.end - r.pos} unexpected bytes after the streams")
        archive = cls(
            model_id,
            shapes,
            sizes,
            streams,
            int.from_bytes(data[-8:-4], "big"),
            bool(flags & _LABELS),
            names,
            lengths,
        )
        archive.payload_bytes = r.end - start
        return archive


def codes_crc(codes: list[np.ndarray], labels: np.ndarray | None) -> int:
    """CRC-32 of every level's codes (N, *shape) and the labels, as little-endian int32."""
    crc = 0
    for array in [*codes, *([] if labels is None else [labels])]:
        crc = zlib.crc32(np.ascontiguousarray(array, dtype="<i4").tobytes(), crc)
    return crc


def varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low bits first, high bit = more follow."""
    if n < 0:
        raise ValueError(f"varint of a negative number {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes, pos: int, end: int, source: str) -> None:
        self.data, self.pos, self.end, self.source = data, pos, end, source

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise ArchiveError(f"{self.source}: corrupted archive (a field runs past the end)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ArchiveError(f"{self.source}: corrupted archive (an overlong number)")
