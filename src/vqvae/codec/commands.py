"""``vqvae compress`` and ``vqvae decompress`` over files: read the input, code it, write the
archive (and its report as JSON beside it); read an archive, write one file per item."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from vqvae.codec.archive import Archive, ArchiveError
from vqvae.codec.codec import DEFAULT_BATCH, Codec
from vqvae.codec.items import ITEM_FORMATS, Items
from vqvae.errors import ConfigError, DataError, VQVAEError
from vqvae.files import atomic_write_bytes, atomic_write_text
from vqvae.pipeline.families import FAMILIES
from vqvae.pipeline.run import RunDir


def read_items(codec: Codec, run: str | Path, source: str, split: str) -> tuple[Items, Any]:
    """An image/WAV file or folder (names kept), or a data spec's ``split`` (labels kept)."""
    kind = codec.family.kind
    fmt = ITEM_FORMATS.get(kind, "model.kind") if kind in ITEM_FORMATS else None
    path = Path(source)
    if path.exists():
        if fmt is None:
            raise ConfigError(f"model.kind = {kind!r}: compress reads a data spec, not files")
        if path.is_file():
            if path.suffix.lower() not in fmt.extensions:
                raise DataError(f"{path}: not a {'/'.join(sorted(fmt.extensions))} file")
            paths, names = [path], [path.stem]
        else:
            paths = fmt.find(path)
            names = [p.relative_to(path).with_suffix("").as_posix() for p in paths]
        if not paths:
            raise DataError(f"{path}: no {'/'.join(sorted(fmt.extensions))} files")
        items = fmt.read(codec.model, paths)
        items.names = names
        return items, fmt
    config, _ = RunDir(run).read_config()
    data = codec.family.load_data(source, config.model)
    part = getattr(data, split)
    inputs = codec.family.inputs(part, codec.model)
    return Items(inputs, None, part.labels, getattr(part, "lengths", None)), fmt


def compress_input(
    run: str | Path,
    source: str,
    out: str | Path,
    *,
    split: str = "test",
    label: int | None = None,
    batch: int = DEFAULT_BATCH,
    levels: int | None = None,
    bitrate: float | None = None,
    chunk: int | None = None,
) -> dict[str, Any]:
    """Compress ``source`` with the run's model and prior(s) into the archive ``out``; write
    ``out``.json with the report, and return it. ``levels`` or ``bitrate`` (bits per second,
    raw): code only the first k residual levels (``Codec.depth``). ``chunk``: encode as a
    causal model streams, ``chunk`` hops at a time (the same codes, so the same archive)."""
    codec = Codec.from_run(run, batch)
    if chunk is not None:
        codec.check_chunk(chunk)
    depth = codec.depth(levels, bitrate)  # checked before any input is read
    if label is not None and not codec.label_rows:
        raise ConfigError("--label given but the prior is unconditional")
    classes = codec.priors[0].config.num_classes
    if label is not None and not 0 <= label < classes:
        raise ConfigError(f"--label must be in [0, {classes}), got {label}")
    items, fmt = read_items(codec, run, source, split)
    n = len(items.inputs)
    if n == 0:
        raise DataError(f"{source}: no items to compress")
    labels = items.labels
    if label is not None:
        labels = np.full(n, label, np.int64)
    start = time.perf_counter()
    codes = codec.truncate(codec.encode(items.inputs, chunk), depth)
    encoded = time.perf_counter()
    labels = codec.coded_labels(codes, labels)
    data = codec.compress_codes(codes, labels, names=items.names, lengths=items.lengths)
    done = time.perf_counter()
    atomic_write_bytes(out, data)
    payload = Archive.from_bytes(data, str(out)).payload_bytes
    nll = float(codec.item_bits(codes, labels).sum())
    report: dict[str, Any] = {
        "archive": str(out),
        "items": n,
        "bytes": len(data),
        "payload_bytes": payload,
        "header_bytes": len(data) - payload,
        "bytes_per_item": len(data) / n,
        "bits_per_item": 8 * len(data) / n,
        "prior_nll_bits_per_item": nll / n,
        "payload_over_nll": 8 * payload / nll if nll else None,
    }
    if codec.residual_levels:  # the residual levels coded, of the model's L
        report["levels"] = depth or codec.residual_levels
    if fmt is not None:
        if items.lengths is not None and fmt.unit == "second":
            units = float(np.sum(items.lengths)) / codec.model.config.sample_rate
        else:
            units = n * fmt.units(codec.model)
        report[f"bits_per_{fmt.unit}"] = 8 * len(data) / units
        report[f"prior_nll_bits_per_{fmt.unit}"] = nll / units
    report.update(
        {
            "seconds": done - start,
            "encode_seconds": encoded - start,
            "items_per_second": n / (done - start),
            "batch": batch,
            "chunk_hops": chunk,
            "threads": torch.get_num_threads(),
        }
    )
    atomic_write_text(f"{out}.json", json.dumps(report, indent=2) + "\n")
    return report


def decompress_file(
    archive: str | Path,
    run: str | Path,
    out: str | Path,
    *,
    batch: int = DEFAULT_BATCH,
    chunk: int | None = None,
) -> dict[str, Any]:
    """Decode the archive with the run's model and prior(s) and write one file per item into
    the folder ``out`` (named after the inputs, or 00000, 00001, …). Nothing is written unless
    the whole archive decodes and its codes checksum matches. ``chunk``: decode as a causal
    model streams, ``chunk`` codes at a time."""
    path = Path(archive)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    codec = Codec.from_run(run, batch)
    if chunk is not None:
        codec.check_chunk(chunk)
    fmt = ITEM_FORMATS.get(codec.family.kind, "model.kind")
    data = path.read_bytes()
    start = time.perf_counter()
    result = codec.decompress_archive(data, str(path), chunk=chunk)
    seconds = time.perf_counter() - start
    n = len(result.indices[0])
    names = result.names or [f"{i:05d}" for i in range(n)]
    for name in names:
        _check_name(name, path)
    if len(set(names)) != len(names):
        raise ArchiveError(f"{path}: two items have the same name")
    files = fmt.to_files(codec.model, result.outputs, result.lengths)
    out = Path(out)
    written = []
    for name, item in zip(names, files, strict=True):
        target = out / f"{name}{fmt.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        fmt.write(codec.model, target, item)
        written.append(target)
    depth = {"levels": result.indices[0].shape[1]} if codec.residual_levels else {}
    return {
        "items": n,
        **depth,  # the residual levels the archive holds (it records them), decoded
        "out": str(out),
        "seconds": seconds,
        "items_per_second": n / seconds if seconds else None,
        "batch": batch,
        "chunk_hops": chunk,
        "threads": torch.get_num_threads(),
    }


def _check_name(name: str, source: Path) -> None:
    """An item name stays inside the output folder: relative, no '..', no empty part."""
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or "\\" in name
        or "\0" in name
        or os.path.isabs(name)
    ):
        raise ArchiveError(f"{source}: item name {name!r} would be written outside the folder")


CODED_CLIPS = 100  # at most this many test clips are range-coded for bits_per_second_coded


def coded_rate(run_path: str | Path, spec: str | None = None) -> dict[str, float]:
    """Bits per second of audio after entropy coding, for ``vqvae evaluate`` of an audio run
    with an autoregressive prior: the run's codec compresses every ⌈N / CODED_CLIPS⌉-th test
    clip with its label (as ``vqvae compress RUN SPEC --split test`` does) ->

    * ``bits_per_second_coded``: the payload (the range-coded streams and their sizes) over
      the seconds of real audio of the ``coded_clips``;
    * ``bits_per_window_second_coded``: over the clips' whole windows (the codec codes each
      clip's ``model.length`` window, padding included; the ideal beside it is
      ``prior_nll_bits_per_second``);
    * ``archive_bits_per_second``: the whole archive over the real seconds.

    {} for a run of other data or without a prior; {} with one line on stderr saying why when
    the prior cannot drive the coder (a MaskGIT prior, say) or ``constriction`` is missing."""
    run = RunDir(run_path)
    config, saved_spec = run.read_config()
    kind = config.model.kind
    if kind not in ITEM_FORMATS or ITEM_FORMATS.get(kind).unit != "second":
        return {}
    family = FAMILIES.get(kind, "model.kind")
    model = family.load_model(run)
    if not family.code_levels(model) or not family.has_priors(run, model):
        return {}
    test = family.load_data(spec or saved_spec, config.model).test
    which = np.arange(len(test))[:: max(1, -(-len(test) // CODED_CLIPS))]
    labels = None if test.labels is None else test.labels[which]
    try:
        codec = Codec.from_run(run.path)
        codes = codec.encode(family.inputs(test)[which])
        archive = codec.compress_codes(codes, codec.coded_labels(codes, labels))
    except VQVAEError as exc:
        print(f"vqvae evaluate: no bits_per_second_coded: {exc}", file=sys.stderr)
        return {}
    payload = Archive.from_bytes(archive, "archive").payload_bytes  # sizes + streams
    c = model.config
    real_seconds = float(test.lengths[which].sum()) / c.sample_rate
    return {
        "coded_clips": len(which),
        "bits_per_second_coded": 8 * payload / real_seconds,
        "bits_per_window_second_coded": 8 * payload / (len(which) * c.length / c.sample_rate),
        "archive_bits_per_second": 8 * len(archive) / real_seconds,
    }
