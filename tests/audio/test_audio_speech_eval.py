"""`vqvae evaluate` on a tiny audio run with a prior: the speech metrics (narrowband PESQ, STOI
per speaker) and the bits per second after entropy coding — checked against an archive that
`vqvae compress` writes of the same clips; and without the `speech` extra, the metrics left out
with one line saying why."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from helpers import TINY_AUDIO_PRIOR, tiny_audio
from scipy.io import wavfile

from vqvae.cli.main import main
from vqvae.codec import Archive

pytest.importorskip("pesq", reason="the `speech` extra (pesq) is not installed")
pytest.importorskip("pystoi", reason="the `speech` extra (pystoi) is not installed")
pytest.importorskip("constriction", reason="the `codec` extra (constriction) is not installed")

TINY = tiny_audio(4096, 1024, 16)  # 0.51 s: PESQ scores clips of 1/4 s and more
PRIOR = TINY_AUDIO_PRIOR
SPEECH_KEYS = {"pesq_nb", "pesq_nb_scored", "pesq_nb_unscored", "stoi"}
CODED_KEYS = {
    "coded_clips",
    "bits_per_second_coded",
    "bits_per_window_second_coded",
    "archive_bits_per_second",
}


pytestmark = pytest.mark.usefixtures("small_and_single_threaded")


@pytest.fixture(scope="module")
def run_with_prior(tmp_path_factory):
    """2 "digits" × 2 "speakers" × 6 recordings of 0.30-0.36 s (harmonics of a speaker's pitch
    under a digit's formant), a model trained a few steps and a prior."""
    root = tmp_path_factory.mktemp("fsdd") / "recordings"
    root.mkdir()
    rng = np.random.default_rng(0)
    for d in range(2):
        for s, speaker in enumerate(("ann", "bo")):
            for i in range(6):
                t = np.arange(2400 + 240 * (i % 3)) / 8000
                f0, formant = 110 + 90 * s, 600 + 900 * d
                x = sum(
                    np.sin(2 * np.pi * k * f0 * t) * np.exp(-(((k * f0 - formant) / 300) ** 2))
                    for k in range(1, int(3800 / f0))
                )
                x = x * np.sin(np.pi * t / t[-1]) ** 2 + 0.01 * rng.normal(size=t.size)
                pcm = (0.8 * x / np.abs(x).max() * 32767).astype(np.int16)
                wavfile.write(root / f"{d}_{speaker}_{i}.wav", 8000, pcm)
    run = tmp_path_factory.mktemp("runs") / "audio"
    torch.set_num_threads(1)
    args = ["train", "--data", f"fsdd:{root}", "--out", str(run), "--steps", "6", *TINY]
    assert main(args) == 0
    assert main(["train-prior", str(run), *PRIOR, "--steps", "4"]) == 0
    return run, root


def test_evaluate_reports_pesq_stoi_and_the_coded_rate(run_with_prior, tmp_path):
    run, root = run_with_prior
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= SPEECH_KEYS | CODED_KEYS
    assert (
        metrics["pesq_nb_scored"] + metrics["pesq_nb_unscored"] == 20
    )  # test clips: recordings 0-4
    assert metrics["pesq_nb_scored"] > 0 and 1.0 <= metrics["pesq_nb"] <= 4.6
    assert 0.0 <= metrics["stoi"] <= 1.0
    # The payload of the archive `vqvae compress` writes of the same (all 20) test clips.
    assert metrics["coded_clips"] == 20
    out = tmp_path / "test.vqz"
    assert main(["compress", str(run), f"fsdd:{root}", "--split", "test", "--out", str(out)]) == 0
    archive = Archive.from_bytes(out.read_bytes(), str(out))
    seconds = sum(archive.lengths) / 8000
    assert metrics["bits_per_second_coded"] == pytest.approx(8 * archive.payload_bytes / seconds)
    window = 8 * archive.payload_bytes / (20 * 4096 / 8000)
    assert metrics["bits_per_window_second_coded"] == pytest.approx(window)
    assert metrics["archive_bits_per_second"] > metrics["bits_per_second_coded"]
    for key in SPEECH_KEYS | CODED_KEYS:
        assert math.isfinite(metrics[key]), key


def test_without_the_speech_extra_evaluate_says_why_in_one_line(
    run_with_prior, monkeypatch, capsys
):
    run, _ = run_with_prior
    monkeypatch.setitem(sys.modules, "pesq", None)  # `import pesq` now raises ImportError
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert not SPEECH_KEYS & set(metrics) and "snr_db" in metrics
    lines = [line for line in capsys.readouterr().err.splitlines() if "pesq" in line]
    assert lines == [
        "vqvae evaluate: no pesq_nb or stoi: PESQ needs the `pesq` package: "
        "pip install 'vqvae[speech]'"
    ]
