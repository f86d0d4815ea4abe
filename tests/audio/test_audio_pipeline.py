"""The audio pipeline through the CLI on a tiny FSDD-shaped folder: train (WAVs and
spectrograms in the run folder), encode/decode, reconstruct, train-prior (Transformer over code
sequences), sample (WAV files), evaluate (every audio metric key); and its error paths."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import TINY_AUDIO_PRIOR, tiny_audio
from scipy.io import wavfile

from vqvae.cli.main import main
from vqvae.data import load_codes

TINY = tiny_audio(512, 256, 8)
PRIOR = TINY_AUDIO_PRIOR
EXPECTED_KEYS = {
    "snr_db",
    "lsd_db",
    "bitrate_bps",
    "codes_per_second",
    "intelligibility_ratio",
    "classifier_test_accuracy",
    "reconstruction_class_accuracy",
    "probe_digit_accuracy",
    "probe_digit_chance",
    "probe_speaker_accuracy",
    "probe_speaker_chance",
    "prior_nll_bits_per_code",
    "sample_class_accuracy",
}


pytestmark = pytest.mark.usefixtures("small_and_single_threaded")


@pytest.fixture(scope="module")
def fsdd_dir(tmp_path_factory):
    """3 "digits" (a tone each) × 2 "speakers" (an amplitude envelope each) × 8 recordings."""
    root = tmp_path_factory.mktemp("fsdd") / "recordings"
    root.mkdir()
    rng = np.random.default_rng(0)
    for d in range(3):
        for s, speaker in enumerate(("ann", "bo")):
            for i in range(8):
                n = 300 + 20 * i
                t = np.arange(n) / 8000
                tone = np.sin(2 * np.pi * (300 + 500 * d) * t) * (1 + s * np.sin(40 * t))
                x = 0.3 * tone + 0.01 * rng.normal(size=n)
                wavfile.write(root / f"{d}_{speaker}_{i}.wav", 8000, (x * 32767).astype(np.int16))
    return root


@pytest.fixture(scope="module")
def trained_run(fsdd_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "audio"
    torch.set_num_threads(1)
    args = ["train", "--data", f"fsdd:{fsdd_dir}", "--out", str(run), "--steps", "12", *TINY]
    assert main(args) == 0
    return run


def test_train_selects_the_audio_model_and_writes_audio_pictures(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["kind"] == "audio"  # chosen by the fsdd: spec
    assert config["model"]["data_variance"] != 1.0  # measured on the training clips
    for name in ["model/model.safetensors", "spectrograms.png", "codebook_usage.png"]:
        assert (trained_run / name).is_file(), name
    wavs = sorted(p.name for p in (trained_run / "audio").glob("*.wav"))
    assert len(wavs) == 6 and wavs[0].startswith("original_0_0")  # one clip per digit
    rate, pcm = wavfile.read(trained_run / "audio" / wavs[-1])
    assert rate == 8000 and pcm.dtype == np.int16 and len(pcm) == 512


def test_encode_decode_reconstruct(trained_run, tmp_path):
    codes_file = tmp_path / "codes.safetensors"
    assert main(["encode", str(trained_run), "--out", str(codes_file), "--split", "test"]) == 0
    codes = load_codes(codes_file)
    assert codes.indices.shape == (30, 64) and codes.codebook_size == 16
    assert codes.meta["codes_per_second"] == 1000.0
    assert main(["decode", str(trained_run), "--codes", str(codes_file), "--out",
                 str(tmp_path / "dec"), "--n", "3"]) == 0  # fmt: skip
    assert len(list((tmp_path / "dec").glob("decoded_*.wav"))) == 3
    assert (tmp_path / "dec" / "spectrograms.png").is_file()
    assert main(["reconstruct", str(trained_run), "--out", str(tmp_path / "rec"), "--n", "2"]) == 0
    assert len(list((tmp_path / "rec").glob("*.wav"))) == 4


def test_prior_sample_and_evaluate(trained_run, tmp_path):
    assert main(["train-prior", str(trained_run), *PRIOR, "--steps", "10"]) == 0
    saved = json.loads((trained_run / "prior" / "model" / "config.json").read_text())["config"]
    # FSDD's classes are the ten digits, whichever of them a folder holds.
    assert saved["layout"] == "1d" and saved["max_length"] == 64 and saved["num_classes"] == 10
    out = tmp_path / "samples"
    assert main(["sample", str(trained_run), "--n", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.wav")) == [
        f"sample_{d}_{i}.wav" for d in range(10) for i in range(2)
    ]
    assert (out / "spectrograms.png").is_file()
    assert main(["sample", str(trained_run), "--n", "1", "--label", "2", "--out", str(out)]) == 0
    assert main(["evaluate", str(trained_run), "--samples", "6"]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics) >= EXPECTED_KEYS
    assert metrics["bitrate_bps"] == 1000 * 4  # 8000 / 8 codes per second × log2 16
    assert metrics["probe_speaker_chance"] == 0.5 and metrics["probe_digit_chance"] == 1 / 3
    for key in EXPECTED_KEYS:
        assert math.isfinite(metrics[key]), key
    assert 0 <= metrics["sample_class_accuracy"] <= 1
    assert len(list((trained_run / "evaluate_samples").glob("*.wav"))) == 6
    assert (trained_run / "evaluate_samples.png").is_file()
    assert (trained_run / "classifier" / "classifier.json").is_file()


def test_packaged_audio_model_ships_its_classifier(trained_run, tmp_path):
    """A shipped audio model carries the classifier its card's intelligibility was measured
    with, so loading it reproduces that figure without retraining one."""
    from vqvae import zoo
    from vqvae.zoo.package import package

    if not (trained_run / "prior" / "model").is_dir():
        assert main(["train-prior", str(trained_run), *PRIOR, "--steps", "10"]) == 0
    if not (trained_run / "metrics.json").is_file():
        assert main(["evaluate", str(trained_run)]) == 0
    evaluated = json.loads((trained_run / "metrics.json").read_text())
    path = package(trained_run, "tiny-audio", description="d", commands=["c"], root=tmp_path)
    card = zoo.verify(path)
    assert "classifier/model.safetensors" in card["files"]
    fp32 = card["metrics_fp32_weights"]
    assert fp32["intelligibility_ratio"] == evaluated["intelligibility_ratio"]
    assert card["tolerances"]["intelligibility_ratio"] == 0.01
    again = zoo.measure(zoo.load_folder(path))
    assert again["intelligibility_ratio"] == card["metrics"]["intelligibility_ratio"]


def test_errors_are_one_line_exit_2(trained_run, fsdd_dir, tmp_path, capsys):
    cases = [
        ["train", "--data", "digits", "--out", str(tmp_path / "a"), "model.kind=audio"],
        ["train", "--data", f"fsdd:{fsdd_dir}", "--out", str(tmp_path / "b"), "model.kind=vqvae"],
        ["train", "--data", f"fsdd:{tmp_path / 'missing'}", "--out", str(tmp_path / "c")],
        ["sample", str(trained_run), "--n", "1", "--complete", "--out", str(tmp_path / "d")],
        ["sample", str(trained_run), "--n", "1", "--label", "10", "--out", str(tmp_path / "e")],
    ]
    for args in cases:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"vqvae {args[0]}: error:") and "\n" not in err, err
        if "model.kind=vqvae" in args:
            assert "audio data needs model.kind = 'audio'" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_malformed_wav_in_the_dataset_names_the_file(tmp_path, capsys):
    root = tmp_path / "rec"
    root.mkdir()
    for i in range(6):
        wavfile.write(root / f"1_x_{i}.wav", 8000, np.ones(64, np.int16))
    (root / "2_x_7.wav").write_bytes(b"RIFF....WAVEjunk")
    assert main(["train", "--data", f"fsdd:{root}", "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "2_x_7.wav" in capsys.readouterr().err
