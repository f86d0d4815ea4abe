"""ONNX export parity and latency: a trained run's ``encoder.onnx``/``decoder.onnx`` (``vqvae
export``) run by onnxruntime against the same model in PyTorch, on the first N test images.

    python benchmarks/onnx_parity.py --run runs/mnist --n 1000 --threads 2
    python benchmarks/onnx_parity.py --pretrained mnist --n 1000        # a shipped model

Parity: the indices of both (identical expected; a mismatch is classified as a near-tie when
the two codes' squared distances differ by less than 1e-6 of ||z||² + ||e||², the float32
rounding of the score terms, see ``vqvae.quantizers.core.nearest_index_graph``) and the largest
absolute difference of the decoded images (PyTorch decodes the same indices; the bar is 1e-4).
Latency: median seconds per call of encode and of decode at batch 1 and batch 100, PyTorch
(``model.encode`` / ``model.decode_indices`` + clamp, the library's own path with the fused
search) against onnxruntime's CPU provider with the same number of threads, interleaved.
Writes ``benchmarks/results/onnx_parity_<name>.json`` (``--pretrained mnist`` and
``--pretrained cifar10``: the shipped models).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import RESULTS, interleaved, median_ms, write_rows  # noqa: E402

from vqvae.threads import cpu_name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a trained run folder")
    which.add_argument("--pretrained", help="a shipped model's name (vqvae pretrained)")
    parser.add_argument("--data", help="data spec (default: the run's)")
    parser.add_argument("--n", type=int, default=1000, help="test images compared")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", help="JSON written here")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from vqvae.pipeline.export import export_onnx
    from vqvae.pipeline.run import RunDir
    from vqvae.pipeline.stages import family_of

    torch.set_num_threads(args.threads)
    if args.pretrained:
        from vqvae.zoo import pretrained_run

        run_path, name = pretrained_run(args.pretrained), args.pretrained
    else:
        run_path, name = Path(args.run), Path(args.run).name
    run = RunDir(run_path)
    config, spec = run.read_config()
    family = family_of(config)
    model = family.load_model(run)
    data = family.load_data(args.data or spec, config.model)
    images = family.inputs(data.test, model)[: args.n]

    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, tmp, finish=family.finish)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        sessions = [
            ort.InferenceSession(str(Path(tmp) / f), options, providers=["CPUExecutionProvider"])
            for f in ("encoder.onnx", "decoder.onnx")
        ]
    encoder, decoder = sessions

    # --- parity -----------------------------------------------------------------------------
    (want,) = family.encode(model, images)  # PyTorch, the fused search
    got = encoder.run(None, {"input": images})[0]
    mismatch = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
    near_ties = _near_ties(model, images, got, want, mismatch)
    decoded_torch = family.decode(model, [want])
    decoded_onnx = decoder.run(None, {"indices": want})[0]
    max_diff = float(np.abs(decoded_onnx - decoded_torch).max())
    print(
        f"{name}: {len(images)} test images, {want.size} indices: {len(mismatch)} differ "
        f"({near_ties} of them near-ties); decoder max |onnx - torch| = {max_diff:.3g}"
    )

    # --- latency ----------------------------------------------------------------------------
    rows = []
    for batch in (1, 100):
        x = images[:batch]
        idx = want[:batch]
        xt, it = torch.from_numpy(x), torch.from_numpy(idx)

        def torch_encode(xt=xt):
            with torch.no_grad():
                return model.encode(xt)

        def torch_decode(it=it):
            with torch.no_grad():
                return family.finish(model.decode_indices(it))

        steps = {
            "torch_encode": torch_encode,
            "onnx_encode": lambda x=x: encoder.run(None, {"input": x}),
            "torch_decode": torch_decode,
            "onnx_decode": lambda idx=idx: decoder.run(None, {"indices": idx}),
        }
        times = interleaved(steps, args.rounds, args.repeats, warmup=3)
        ms = {k: median_ms(v) for k, v in times.items()}
        for part in ("encode", "decode"):
            row = {
                "batch": batch,
                "part": part,
                "torch_ms": ms[f"torch_{part}"],
                "onnxruntime_ms": ms[f"onnx_{part}"],
                "onnx_over_torch": ms[f"onnx_{part}"] / ms[f"torch_{part}"],
            }
            rows.append(row)
            print(
                f"  batch {batch:3d} {part}: torch {row['torch_ms']:.3f} ms, onnxruntime "
                f"{row['onnxruntime_ms']:.3f} ms (onnx/torch {row['onnx_over_torch']:.2f})"
            )
    result = {
        "model": name,
        "data": args.data or spec,
        "images": len(images),
        "indices": int(want.size),
        "indices_differing": int(len(mismatch)),
        "near_ties": int(near_ties),
        "decoder_max_abs_diff": max_diff,
        "latency": rows,
        "threads": args.threads,
        "cpu": cpu_name(),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
    }
    out = args.out or RESULTS / f"onnx_parity_{name}.json"
    print(write_rows(out, [result]))


def _near_ties(model, images, got, want, rows) -> int:
    """How many of the differing positions are near-ties (see the module docstring)."""
    if not len(rows) or model.quantizer.index_levels or not hasattr(model.quantizer, "codebook"):
        return 0
    with torch.no_grad():
        z = model.encoder_output(torch.from_numpy(images))
        z = z.movedim(1, -1).reshape(-1, z.shape[1]).double()[rows]  # (n, D)
        codebook = model.quantizer.codebook_vectors().double()
    a, b = torch.from_numpy(got.reshape(-1)[rows]), torch.from_numpy(want.reshape(-1)[rows])
    gap = ((z - codebook[a]).pow(2).sum(1) - (z - codebook[b]).pow(2).sum(1)).abs()
    scale = z.pow(2).sum(1) + codebook.pow(2).sum(1).max()
    return int((gap <= 1e-6 * scale).sum())


if __name__ == "__main__":
    main()
