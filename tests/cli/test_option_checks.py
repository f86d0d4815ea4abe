"""Count and size options, and config numbers, that make no sense are refused before anything
is read or written: exit 2, one line naming the option."""

import pytest

from vqvae.cli.main import main

RUN = "no-such-run"  # the options are checked before the run is opened
OUT = ["--out", "out.png"]

OPTIONS = [
    (["reconstruct", RUN, *OUT, "--n", "-3"], "--n must be >= 1, got -3"),
    (["reconstruct", RUN, *OUT, "--n", "0"], "--n must be >= 1, got 0"),
    (["decode", RUN, "--codes", "c.safetensors", *OUT, "--n", "0"], "--n must be >= 1"),
    (["sample", RUN, *OUT, "--n", "-1"], "--n must be >= 1"),
    (["sample", RUN, *OUT, "--label", "-2"], "--label must be >= 0, got -2"),
    (["sample", RUN, *OUT, "--temperature", "-1"], "--temperature must be a number >= 0"),
    (["sample", RUN, *OUT, "--temperature", "nan"], "--temperature must be a number >= 0"),
    (["sample", RUN, *OUT, "--temperature", "inf"], "--temperature must be a number >= 0"),
    (["sample", RUN, *OUT, "--top-k", "0"], "--top-k must be >= 1, got 0"),
    (["sample", RUN, *OUT, "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["sample", RUN, *OUT, "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["sample", RUN, *OUT, "--top-p", "nan"], "--top-p must be in (0, 1]"),
    (["sample", RUN, *OUT, "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["sample", RUN, *OUT, "--guidance-scale", "nan"], "--guidance-scale must be a finite"),
    (["sample", RUN, *OUT, "--decode-steps", "0"], "--decode-steps must be >= 1, got 0"),
    (["sample", RUN, *OUT, "--confidence-noise", "-1"], "--confidence-noise must be a finite"),
    (["evaluate", RUN, "--confidence-noise", "inf"], "--confidence-noise must be a finite"),
    (["evaluate", RUN, "--samples", "-5"], "--samples must be >= 0, got -5"),
    (["evaluate", RUN, "--temperature", "-0.5"], "--temperature must be a number >= 0"),
    (["evaluate", RUN, "--seed", "-1"], "--seed must be >= 0"),
    (["train", "--data", "digits", "--out", "r", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["train", "--data", "digits", "--out", "r", "--steps", "-5"], "--steps must be >= 1"),
    (
        ["train", "--data", "digits", "--out", "r", "--minutes", "0"],
        "--minutes must be a number > 0",
    ),
    (["train", "--data", "digits", "--out", "r", "--minutes", "nan"], "--minutes must be a number"),
    (["train", "--data", "digits", "--out", "r", "--minutes", "-1"], "--minutes must be a number"),
    (["train-prior", RUN, "--steps", "0"], "--steps must be >= 1"),
    (["train-prior", RUN, "--minutes", "inf"], "--minutes must be a number > 0"),
]

CONFIG = [
    ("train.steps=0", "train.steps must be >= 1"),
    ("train.minutes=-1", "train.minutes must be a number > 0"),
    ("train.minutes=nan", "train.minutes must be a number > 0"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.lr=0", "train.lr must be a number > 0"),
    ("train.lr=nan", "train.lr must be a number > 0"),
    ("train.lr=inf", "train.lr must be a number > 0"),
    ("train.weight_decay=-0.1", "train.weight_decay must be a number >= 0"),
    ("train.grad_clip=nan", "train.grad_clip must be a number >= 0"),
    ("train.min_lr_ratio=2", "train.min_lr_ratio must be in [0, 1]"),
    ("train.warmup_steps=-1", "train.warmup_steps must be >= 0"),
    ("train.log_every=-1", "train.log_every must be >= 0"),
    ("train.checkpoint_every=-1", "train.checkpoint_every must be >= 0"),
    ("train.seed=-1", "train.seed must be >= 0"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints must be >= 1"),
    ("prior_train.batch_size=0", "train.batch_size must be >= 1"),
    ("model.quantizer.codebook_size=1", "codebook_size must be at least 2"),
]


def _refused(argv, needle, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vqvae {argv[0]}: error: "), lines
    assert needle in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(("argv", "needle"), OPTIONS, ids=[" ".join(a[-2:]) for a, _ in OPTIONS])
def test_option_out_of_range(argv, needle, capsys, tmp_path, monkeypatch):
    _refused(argv, needle, capsys, tmp_path, monkeypatch)


@pytest.mark.parametrize(("override", "needle"), CONFIG, ids=[o for o, _ in CONFIG])
def test_config_number_out_of_range(override, needle, capsys, tmp_path, monkeypatch):
    _refused(
        ["train", "--data", "digits", "--out", "r", override], needle, capsys, tmp_path, monkeypatch
    )


def test_defaults_pass_the_checks():
    from vqvae.cli.main import build_parser, check_options

    parser = build_parser()
    for argv in (["sample", RUN, *OUT], ["evaluate", RUN], ["reconstruct", RUN, *OUT]):
        check_options(parser.parse_args(argv))
