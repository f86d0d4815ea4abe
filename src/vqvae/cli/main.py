"""The ``vqvae`` command: thin sub-commands over ``vqvae.pipeline``.

Errors the user can fix (bad data, bad options, missing runs) print one line and exit with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from vqvae import configs, threads
from vqvae.data import spec_help
from vqvae.errors import ConfigError, VQVAEError

# torch-free: `vqvae --help` stays fast
from vqvae.pipeline.sections import LEGACY_PRIOR_KEYS, PRIOR_SECTIONS

SPEC_HELP = spec_help()  # every registered data scheme (vqvae.data.SCHEMES), torch-free
AUDIO_OUT = " (audio runs: a folder for WAV files and spectrograms.png)"


def _budget(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", type=int, help="number of optimisation steps")
    group.add_argument("--minutes", type=float, help="wall-clock training budget in minutes")


def _budget_overrides(args: argparse.Namespace, section: str) -> list[str]:
    """--steps N or --minutes M replaces the config's budget (they are mutually exclusive)."""
    if args.steps is not None:
        return [f"{section}.steps={args.steps}", f"{section}.minutes=none"]
    if args.minutes is not None:
        return [f"{section}.minutes={args.minutes}", f"{section}.steps=none"]
    return []


def _other_data(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-other-data",
        action="store_true",
        help="with --resume: continue on --data although the run was trained on other data",
    )


def _overrides(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def _run_or_pretrained(p: argparse.ArgumentParser) -> None:
    """RUN, or --pretrained NAME: a model shipped with the package (``vqvae pretrained``)."""
    p.add_argument("run", nargs="?", help="run folder (or --pretrained NAME)")
    p.add_argument("--pretrained", metavar="NAME", help="a shipped model (see `vqvae pretrained`)")


def run_folder(args: argparse.Namespace) -> str:
    """The run folder a command works on: RUN, or the verified folder of --pretrained NAME."""
    if args.pretrained is None:
        if args.run is None:
            raise ConfigError("give a RUN folder or --pretrained NAME")
        return args.run
    if args.run is not None:
        raise ConfigError(f"give a RUN folder ({args.run}) or --pretrained NAME, not both")
    from vqvae.zoo import pretrained_run

    return str(pretrained_run(args.pretrained))


def _guidance(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--guidance-scale",
        type=float,
        help="classifier-free guidance s: logits = uncond + s·(cond − uncond); 0 = unconditional, "
        "1 = conditional (needs a prior trained with prior.label_dropout > 0)",
    )


def _parallel_decoding(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--decode-steps",
        type=int,
        help="network passes per map of a parallel-decoding prior (prior.kind=maskgit; "
        "default: its prior.decode_steps)",
    )
    p.add_argument(
        "--confidence-noise",
        type=float,
        metavar="X",
        help="scale of the Gumbel noise on a parallel-decoding prior's confidences at its "
        "first step (prior.kind=maskgit; default: its prior.confidence_noise)",
    )


def _chunk(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument(
        "--chunk",
        type=int,
        metavar="N",
        help=f"causal audio models (model.causal = true): {verb} as a stream, N hops at a time "
        "(a hop is model.downsample samples, one code); the codes, so the archive, are the "
        "offline pass's, the audio agrees to float rounding",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqvae", description="VQ-VAE: learn discrete codes, train a prior over them, sample."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole pipeline on the built-in digits dataset")
    p.add_argument("--out", default="demo-run", help="run folder (default: demo-run)")
    _overrides(p, "config overrides")

    p = sub.add_parser("train", help="train a VQ-VAE")
    p.add_argument("--data", help=SPEC_HELP + " (required, except with --resume)")
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--config", help="config file (.toml, .yaml or .json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    _other_data(p)
    _budget(p)
    _overrides(p, "config overrides, e.g. model.quantizer.codebook_size=1024")

    p = sub.add_parser("reconstruct", help="write originals above their reconstructions")
    _run_or_pretrained(p)
    p.add_argument("--data", help=SPEC_HELP + " (default: the run's)")
    p.add_argument("--out", required=True, help="PNG file" + AUDIO_OUT)
    p.add_argument("--n", type=int, default=16, help="number of test images")

    p = sub.add_parser("encode", help="encode a dataset split to a codes file")
    _run_or_pretrained(p)
    p.add_argument("--data", help=SPEC_HELP + " (default: the run's)")
    p.add_argument("--out", required=True, help="codes file (.safetensors)")
    p.add_argument("--split", choices=("train", "test"), default="train")

    p = sub.add_parser("decode", help="decode a codes file (from `vqvae encode`) to images")
    _run_or_pretrained(p)
    p.add_argument("--codes", required=True, help="codes file (.safetensors)")
    p.add_argument("--out", required=True, help="PNG file" + AUDIO_OUT)
    p.add_argument("--n", type=int, default=16, help="number of index maps to decode")

    p = sub.add_parser(
        "train-prior", help="train the prior (PixelCNN or Transformer; both VQ-VAE-2 levels)"
    )
    p.add_argument("run")
    p.add_argument("--data", help=SPEC_HELP + " (default: the run's)")
    p.add_argument(
        "--config",
        help="config file: its prior, prior_train and conditional_prior sections are used "
        "(the other sections describe the VQ-VAE, which is already trained)",
    )
    p.add_argument("--resume", action="store_true")
    _other_data(p)
    _budget(p)
    _overrides(p, "prior.* / prior_train.* overrides, e.g. prior.layers=15, prior.kind=transformer")

    p = sub.add_parser("sample", help="sample codes from the prior and decode them")
    _run_or_pretrained(p)
    p.add_argument("--n", type=int, default=10, help="samples (per class for a conditional prior)")
    p.add_argument("--label", type=int, help="class to sample (conditional priors)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, default=0)
    _guidance(p)
    p.add_argument(
        "--complete",
        action="store_true",
        help="keep the top half of --n test images' codes and sample the rest",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="recompute the prior at every position (slow)"
    )
    _parallel_decoding(p)
    p.add_argument("--out", required=True, help="PNG file" + AUDIO_OUT)

    p = sub.add_parser("evaluate", help="measure a run on the test split (writes RUN/metrics.json)")
    p.add_argument("run")
    p.add_argument("--data", help=SPEC_HELP + " (default: the run's)")
    p.add_argument(
        "--samples",
        type=int,
        default=0,
        metavar="N",
        help="also draw N samples and measure sample_frechet (and sample_class_accuracy)",
    )
    p.add_argument(
        "--classifier",
        metavar="DIR",
        help="folder of the classifier that scores samples, trained there if missing "
        "(default: RUN/classifier); share one between runs to compare them",
    )
    p.add_argument("--temperature", type=float, default=1.0)
    _guidance(p)
    _parallel_decoding(p)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser(
        "export", help="write the model as ONNX: encoder.onnx (input -> indices), decoder.onnx"
    )
    _run_or_pretrained(p)
    p.add_argument("--out", required=True, help="folder for encoder.onnx, decoder.onnx")

    sub.add_parser("pretrained", help="list the models shipped with the package (--pretrained)")

    p = sub.add_parser(
        "compress", help="entropy-code items with the run's model and prior into one archive"
    )
    _run_or_pretrained(p)
    p.add_argument(
        "input",
        nargs="?",
        help="an image or WAV file, a folder of them, or a data spec (" + SPEC_HELP + "); "
        "with --pretrained NAME it is the only positional",
    )
    p.add_argument("--out", required=True, help="archive file (its report goes to FILE.json)")
    p.add_argument("--split", choices=("train", "test"), default="test", help="of a data spec")
    p.add_argument(
        "--label",
        type=int,
        help="class of every item (conditional priors; default: the data's labels, else the "
        "class that codes each item in the fewest bits)",
    )
    p.add_argument("--batch", type=int, default=64, help="items coded together (default 64)")
    _chunk(p, "encode")
    depth = p.add_mutually_exclusive_group()
    depth.add_argument(
        "--levels",
        type=int,
        help="residual quantizer: code only the first K of its L levels (default: all; the "
        "archive records K, decompress decodes K levels)",
    )
    depth.add_argument(
        "--bitrate",
        type=float,
        metavar="BPS",
        help="residual quantizer: code the most levels whose raw rate (codes per second x "
        "levels x log2 K, before entropy coding) is at most BPS bits per second",
    )

    p = sub.add_parser("decompress", help="decode an archive into PNG (or WAV) files")
    p.add_argument("archive")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="the run folder that compressed it")
    which.add_argument("--pretrained", metavar="NAME", help="the shipped model that compressed it")
    p.add_argument("--out", required=True, help="folder for the files")
    p.add_argument("--batch", type=int, default=64, help="items decoded together (default 64)")
    _chunk(p, "decode")

    p = sub.add_parser("download", help="download MNIST or Fashion-MNIST (checksums verified)")
    p.add_argument("dataset", choices=("mnist", "fashion-mnist"))
    p.add_argument("dest", help="folder for the four IDX files")
    p.add_argument("--base-url", help="mirror to download from")

    for name, command in sub.choices.items():  # every command that computes
        if name != "download":
            command.add_argument(
                "--threads",
                type=int,
                help="compute threads (default: auto, the CPUs available minus other busy "
                "work, followed while training; also VQVAE_THREADS=N)",
            )
    return parser


# Count and size options, and the values that make sense for them: checked before any work,
# so a bad value is one line naming the option, and nothing is read or written.
OPTION_RULES: list[tuple[str, str, Callable[[float], bool]]] = [
    ("n", ">= 1", lambda v: v >= 1),
    ("batch", ">= 1", lambda v: v >= 1),
    ("steps", ">= 1", lambda v: v >= 1),
    ("minutes", "a number > 0", lambda v: math.isfinite(v) and v > 0),
    ("samples", ">= 0", lambda v: v >= 0),
    ("label", ">= 0", lambda v: v >= 0),
    ("temperature", "a number >= 0", lambda v: math.isfinite(v) and v >= 0),
    ("top_k", ">= 1", lambda v: v >= 1),
    ("top_p", "in (0, 1]", lambda v: 0 < v <= 1),
    ("seed", ">= 0", lambda v: v >= 0),
    ("threads", ">= 1", lambda v: v >= 1),
    ("guidance_scale", "a finite number", math.isfinite),
    ("decode_steps", ">= 1", lambda v: v >= 1),
    ("confidence_noise", "a finite number >= 0", lambda v: math.isfinite(v) and v >= 0),
    ("chunk", ">= 1 (hops)", lambda v: v >= 1),
    ("levels", ">= 1", lambda v: v >= 1),
    ("bitrate", "a number > 0", lambda v: math.isfinite(v) and v > 0),
]


def check_options(args: argparse.Namespace) -> None:
    for dest, rule, ok in OPTION_RULES:
        value = getattr(args, dest, None)
        if value is not None and not ok(value):
            raise ConfigError(f"--{dest.replace('_', '-')} must be {rule}, got {value}")


def _coded_rate(run: str, spec: str | None) -> dict[str, float]:
    """``evaluate``'s bits per second after entropy coding (an audio run with a prior; the
    codec sits above the pipeline, so it is measured here), added to RUN/metrics.json."""
    import json

    from vqvae.files import atomic_write_text
    from vqvae.pipeline.run import RunDir

    try:
        from vqvae.codec import coded_rate
    except ImportError as exc:  # the codec extra (constriction) is missing
        print(f"vqvae evaluate: no bits_per_second_coded: {exc}", file=sys.stderr)
        return {}
    coded = coded_rate(run, spec)
    if coded:
        path = RunDir(run).metrics_file
        metrics = json.loads(path.read_text())
        atomic_write_text(path, json.dumps({**metrics, **coded}, indent=2) + "\n")
    return coded


def _print_metrics(title: str, metrics: dict) -> None:
    print(title)
    for k, v in metrics.items():
        print(f"  {k:28s} {v:.4f}" if isinstance(v, float) else f"  {k:28s} {v}")


def run(args: argparse.Namespace) -> int:
    check_options(args)
    from vqvae.distributed import is_main_process
    from vqvae.pipeline import stages
    from vqvae.pipeline.run import resolve_config

    if args.command != "download":
        threads.apply_policy(args.threads)  # training prints it once and logs it (fit)

    if args.command == "demo":
        from vqvae.pipeline.demo import run_demo

        metrics = run_demo(args.out, args.overrides)
        _print_metrics(f"demo finished: run folder {args.out}", metrics)
        print(f"  pictures: {args.out}/reconstructions.png, {args.out}/samples.png")
    elif args.command == "train":
        if args.resume and args.data is None:  # the run's data (which also picks its family)
            from vqvae.pipeline.run import RunDir

            args.data = RunDir(args.out).read_config()[1]
        overrides = args.overrides + _budget_overrides(args, "train")
        config = resolve_config(args.config, overrides, data=args.data)
        summary = stages.train_vqvae(
            args.data, args.out, config, resume=args.resume, other_data=args.allow_other_data
        )
        if not is_main_process():
            return _exit_status(summary.result)
        state = "interrupted at" if summary.result.interrupted else "finished"
        print(f"training {state} step {summary.result.step} ({summary.result.seconds:.0f} s)")
        if summary.result.interrupted:
            print(f"saved; continue with: vqvae train --out {args.out} --resume")
            return _exit_status(summary.result)
        _print_metrics("test split:", summary.metrics)
    elif args.command == "reconstruct":
        print(stages.reconstruct(run_folder(args), args.data, args.out, args.n))
    elif args.command == "encode":
        print(stages.encode_dataset(run_folder(args), args.data, args.out, args.split))
    elif args.command == "train-prior":
        base = configs.load_file(args.config) if args.config else {}
        base = {k: v for k, v in base.items() if k in PRIOR_SECTIONS + LEGACY_PRIOR_KEYS}
        raw = configs.merge_overrides(base, args.overrides + _budget_overrides(args, "prior_train"))
        metrics = stages.train_prior(
            args.run, args.data, raw, resume=args.resume, other_data=args.allow_other_data
        )
        if is_main_process():
            _print_metrics("prior, test split:", metrics)
            if metrics and (preview := stages.preview_samples(args.run)) is not None:
                print(f"samples: {preview}")
    elif args.command == "decode":
        print(stages.decode_codes(run_folder(args), args.codes, args.out, args.n))
    elif args.command == "sample":
        path = stages.sample(
            run_folder(args),
            args.n,
            args.out,
            label=args.label,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            guidance_scale=args.guidance_scale,
            cached=not args.no_cache,
            complete=args.complete,
            decode_steps=args.decode_steps,
            confidence_noise=args.confidence_noise,
        )
        print(path)
    elif args.command == "evaluate":
        from vqvae.pipeline.families import SampleOptions

        options = SampleOptions(
            args.temperature,
            guidance_scale=args.guidance_scale,
            steps=args.decode_steps,
            confidence_noise=args.confidence_noise,
        )
        metrics = stages.evaluate(
            args.run,
            args.data,
            samples=args.samples,
            classifier_dir=args.classifier,
            sample_options=options,
            seed=args.seed,
        )
        metrics.update(_coded_rate(args.run, args.data))
        _print_metrics(f"wrote {Path(args.run) / 'metrics.json'}", metrics)
    elif args.command == "export":
        for path in stages.export_onnx(run_folder(args), args.out):
            print(path)
    elif args.command == "pretrained":
        _list_pretrained()
    elif args.command == "compress":
        from vqvae.codec import compress_input

        if args.pretrained is not None and args.input is None:  # compress --pretrained NAME INPUT
            args.run, args.input = None, args.run
        if args.input is None:
            raise ConfigError("compress: give RUN INPUT, or --pretrained NAME INPUT")
        report = compress_input(
            run_folder(args), args.input, args.out, split=args.split, label=args.label,
            batch=args.batch, levels=args.levels, bitrate=args.bitrate, chunk=args.chunk,
        )  # fmt: skip
        _print_metrics(f"wrote {args.out} (report: {args.out}.json)", report)
    elif args.command == "decompress":
        from vqvae.codec import decompress_file

        report = decompress_file(
            args.archive, run_folder(args), args.out, batch=args.batch, chunk=args.chunk
        )
        _print_metrics(f"wrote {report['items']} files to {args.out}", report)
    elif args.command == "download":
        from vqvae.data import download_dataset

        print(download_dataset(args.dataset, args.dest, base_url=args.base_url))
    return 0


def _list_pretrained() -> None:
    """One line per shipped model: name, size, key test metrics, description."""
    from vqvae.zoo import ZOO, names, read_card

    shipped = names()
    if not shipped:
        print("no shipped models in this installation")
    for name in shipped:
        card = read_card(ZOO / name)
        m = card.get("metrics", {})
        keys = ("psnr", "snr_db", "codebook_usage", "prior_nll_bits_per_code")
        shown = ", ".join(f"{k} {m[k]:.3g}" for k in keys if k in m)
        size = card.get("storage", {}).get("bytes", 0) / 1e6
        print(f"{name:16s} {size:5.1f} MB  {shown}")
        print(f"{'':16s} {card.get('description', '')}")


def _exit_status(result) -> int:
    """0 for a finished run; 128 + the signal number (as a shell reports it) for an interrupted
    one, so that a scheduler can tell a preempted run from a finished one."""
    if not result.interrupted:
        return 0
    return 128 + (result.stop_signal or signal.SIGTERM)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting key=value overrides follow options too: argparse alone gives
    `train-prior RUN --steps 10 prior.kind=transformer` no place for the override."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.parse_args(argv)  # reports the unrecognised arguments and exits
    return args


def _error(args: argparse.Namespace, error: Exception) -> int:
    message = " ".join(str(error).split("\n"))  # one line, whatever the cause's text held
    print(f"vqvae {args.command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    threads.prefer_passive_wait()  # before PyTorch's OpenMP runtime loads (vqvae.threads)
    args = _parse(argv)
    from vqvae.training import TrainingInterrupted
    from vqvae.training.allocator import keep_freed_memory

    keep_freed_memory()  # this process's training steps reuse freed memory (process-wide)
    try:
        from vqvae.distributed import process_group_from_env

        # Under torchrun (WORLD_SIZE > 1) every process joins the group before any work.
        with process_group_from_env():
            return run(args)
    except VQVAEError as e:
        return _error(args, e)
    except TrainingInterrupted as e:  # a prior's training (train-prior, demo) stopped by a signal
        print(f"{e}; saved; continue with: {e.resume}")
        return _exit_status(e.result)
    except OSError as e:  # a write outside vqvae.files (a folder made, TensorBoard's events)
        from vqvae.files import write_error

        if e.filename is None or (error := write_error(e.filename, e)) is None:
            raise
        return _error(args, error)
    except KeyboardInterrupt:
        print(f"vqvae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
