"""ONNX export of a trained model's two halves, for use outside Python (``vqvae export``).

    DIR/encoder.onnx   input (batch, ...) float32 -> indices (batch, *grid) int64
    DIR/decoder.onnx   indices (batch, *grid) int64 -> output (batch, ...) float32
    DIR/export.json    names, shapes and dtypes of both graphs, K, the model type, the opset

The batch axis is free in both graphs, and so is the time axis of an audio model (any length
that is a multiple of its downsampling factor). The encoder runs the model's encoder and the
quantizer's ``export_indices`` (the nearest-code search as one matrix product and an argmin:
``vqvae.quantizers.core.nearest_index_graph``, whose docstring says how ties resolve); the
decoder runs the quantizer's ``export_lookup`` (a gather of the codes), the model's decoder and
the family's ``finish`` (images clamped to [0, 1]), so ``decoder.onnx`` returns what
``vqvae decode`` writes. The graphs are traced by PyTorch's ``torch.export``-based exporter
(``onnxscript``); onnxruntime is not needed to export, only to run them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vqvae.errors import VQVAEError
from vqvae.files import atomic_path, atomic_write_text

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
INFO_FILE = "export.json"
OPSET = 18
EXAMPLE_BATCH = 2  # traced with 2 items; a batch of 1 would be taken for a fixed size
EXPORT_EXTRA = "pip install 'vqvae[export]' (onnx, onnxscript; onnxruntime to run the graphs)"


class EncoderGraph(nn.Module):
    """input -> code indices with plain tensor operations (what ``model.encode`` computes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.quantizer.export_indices(self.model.encoder_output(x))


class DecoderGraph(nn.Module):
    """code indices -> output (what ``model.decode_indices`` returns, then ``finish``)."""

    def __init__(self, model: nn.Module, finish: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.finish = finish

    def forward(self, indices: Tensor) -> Tensor:
        quantized = self.model.quantizer.export_lookup(indices)
        return self.finish(self.model.decode_quantized(quantized))


def exportable(model: nn.Module) -> bool:
    """Whether ``model`` has the hooks export follows: ``encoder_output``,
    ``decode_quantized``, ``example_input`` and a quantizer."""
    hooks = ("encoder_output", "decode_quantized", "example_input", "quantizer")
    return all(hasattr(model, name) for name in hooks)


def export_onnx(
    model: nn.Module,
    out: str | Path,
    *,
    finish: Callable[[Tensor], Tensor] = lambda t: t,
    what: str = "model",
) -> list[Path]:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``export.json`` for ``model`` into ``out``
    (each file atomically). ``what`` names the model in errors (the run folder)."""
    if not exportable(model):
        raise VQVAEError(
            f"{what}: a {type(model).__name__} cannot be exported to ONNX yet (image and audio "
            "VQ-VAEs and vector models can: model.kind vqvae, audio, mlp)"
        )
    try:
        import onnx  # noqa: F401  (the exporter's own dependencies)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise VQVAEError(f"vqvae export needs {e.name}: {EXPORT_EXTRA}") from None
    model = model.eval()
    quantizer = model.quantizer
    example = model.example_input(EXAMPLE_BATCH)
    with torch.no_grad():
        indices = model.encode(example)
    batch = torch.export.Dim("batch", min=1)
    input_axes: dict[int, Any] = {0: batch}
    index_axes: dict[int, Any] = {0: batch}
    multiple = getattr(model, "length_multiple", None)
    if multiple:  # the time axis is free too: length = multiple · codes
        codes = torch.export.Dim("codes", min=1)
        input_axes[example.dim() - 1] = multiple * codes
        index_axes[indices.dim() - 1] = codes
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graphs = (
        (ENCODER_FILE, EncoderGraph(model), example, "input", "indices", input_axes),
        (DECODER_FILE, DecoderGraph(model, finish), indices, "indices", "output", index_axes),
    )
    written = []
    for name, graph, arg, input_name, output_name, axes in graphs:
        with atomic_path(out / name) as tmp:
            _export(graph, arg, tmp, input_name, output_name, axes)
        written.append(out / name)
    with torch.no_grad():
        output = DecoderGraph(model, finish)(indices)
    info = {
        "model": type(model).__name__,
        "codebook_size": quantizer.codebook_size,
        "index_levels": quantizer.index_levels,
        "opset": OPSET,
        "torch": torch.__version__,
        "encoder": {
            "file": ENCODER_FILE,
            "input": _signature("input", example, list(input_axes)),
            "output": _signature("indices", indices, list(index_axes)),
        },
        "decoder": {
            "file": DECODER_FILE,
            "input": _signature("indices", indices, list(index_axes)),
            "output": _signature("output", output, [0, output.dim() - 1] if multiple else [0]),
        },
    }
    atomic_write_text(out / INFO_FILE, json.dumps(info, indent=2) + "\n")
    return [*written, out / INFO_FILE]


def _export(graph, arg, path, input_name, output_name, axes) -> None:
    """Trace ``graph`` on ``arg`` and save it; refuse a graph in which an axis meant to be
    free was fixed to the example's size (a model that reads a size as a Python number)."""
    import onnx

    with _quiet():
        program = torch.onnx.export(
            graph,
            (arg,),
            dynamo=True,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=(axes,),
            opset_version=OPSET,
            optimize=True,
        )
    dims = program.model_proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [axis for axis in axes if not dims[axis].dim_param]
    if fixed:
        raise VQVAEError(
            f"{type(graph.model).__name__}: the exported {input_name} has fixed axes {fixed}; "
            "the model reads their size as a number (use tensor.shape, not len())"
        )
    onnx.checker.check_model(program.model_proto)
    program.save(str(path))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter prints its progress and logs warnings about optional torchvision ops:
    neither is the user's business."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _signature(name: str, example: Tensor, free: list[int]) -> dict[str, Any]:
    """A graph input or output: its name, dtype, and shape with the free axes named."""
    shape: list[Any] = list(example.shape)
    for axis in free:
        shape[axis] = "batch" if axis == 0 else "time"
    return {"name": name, "dtype": str(example.dtype).removeprefix("torch."), "shape": shape}
