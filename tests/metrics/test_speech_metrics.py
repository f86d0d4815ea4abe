"""Speech metrics (``vqvae.metrics.audio``): narrowband PESQ of clean and degraded speech-like
signals, the clips it refuses, and STOI per speaker against pystoi run by hand on each speaker's
concatenated clips; and the message when the ``speech`` extra is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from vqvae.metrics.audio import SpeechExtraMissing, pesq_nb, stoi_per_speaker

pystoi = pytest.importorskip("pystoi", reason="the `speech` extra (pystoi) is not installed")
pytest.importorskip("pesq", reason="the `speech` extra (pesq) is not installed")

RATE = 8000


def voiced(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A vowel-like signal: harmonics of ``f0`` under a formant-shaped envelope, syllables of
    ~0.2 s, a little breath noise; peak 0.9."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(
        np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
        * (np.exp(-(((k * f0 - 700) / 300) ** 2)) + 0.5 * np.exp(-(((k * f0 - 1800) / 400) ** 2)))
        for k in range(1, int(3800 / f0))
    )
    x = x * np.sin(np.pi * t / 0.2) ** 2 + 0.01 * rng.normal(size=t.size)
    return 0.9 * x / np.abs(x).max()


def batch(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Clips of several lengths -> zero-padded (B, T) and their lengths."""
    lengths = np.array([len(c) for c in clips])
    out = np.zeros((len(clips), lengths.max()))
    for i, c in enumerate(clips):
        out[i, : len(c)] = c
    return out, lengths


def test_pesq_of_clean_speech_is_near_the_top_and_noise_lowers_it():
    ref, lengths = batch([voiced(0.6, 120, 0), voiced(0.8, 210, 1)])
    clean = pesq_nb(ref, ref, RATE, lengths)
    assert clean.scored == 2 and clean.unscored == 0
    assert clean.mean > 4.4  # narrowband PESQ's ceiling is about 4.55
    rng = np.random.default_rng(2)
    scores = []
    for scale in (0.003, 0.03, 0.3):
        noisy = ref + scale * rng.normal(size=ref.shape) * (
            np.arange(ref.shape[1]) < lengths[:, None]
        )
        scores.append(pesq_nb(ref, noisy, RATE, lengths).mean)
    assert clean.mean > scores[0] > scores[1] > scores[2]


def test_pesq_counts_refused_clips_and_reads_only_real_samples():
    long, short = voiced(0.6, 150, 3), voiced(0.1, 150, 4)  # PESQ needs >= 1/4 s
    ref, lengths = batch([long, short])
    score = pesq_nb(ref, ref, RATE, lengths)
    assert (score.scored, score.unscored) == (1, 1)
    garbage = ref.copy()
    garbage[1, len(short) :] = 0.5  # beyond clip 1's real samples: must not count
    assert pesq_nb(ref, garbage, RATE, lengths) == score
    nothing = pesq_nb(ref[1:], ref[1:], RATE, lengths[1:])
    assert nothing.scored == 0 and np.isnan(nothing.mean)


def test_pesq_resamples_other_rates_to_8_khz():
    ref = voiced(0.6, 150, 5)[None]
    up = np.repeat(ref, 2, axis=1)  # the same clip at 16 kHz (sample-and-hold; PESQ at 8 kHz)
    score = pesq_nb(up, up, 2 * RATE)
    assert score.scored == 1 and score.mean > 4.4
    with pytest.raises(ValueError, match="one shape"):
        pesq_nb(ref, up, RATE)


def test_stoi_concatenates_each_speakers_clips_then_averages():
    rng = np.random.default_rng(6)
    clips = [voiced(0.3 + 0.05 * i, 110 + 40 * (i % 2), i) for i in range(6)]
    speakers = np.array([0, 1, 0, 1, 1, 0])  # interleaved: grouping must follow the ids
    ref, lengths = batch(clips)
    deg = ref + 0.2 * rng.normal(size=ref.shape)
    got = stoi_per_speaker(ref, deg, RATE, speakers, lengths)
    by_hand = []
    for s in (0, 1):
        which = np.flatnonzero(speakers == s)
        x = np.concatenate([ref[i, : lengths[i]] for i in which])
        y = np.concatenate([deg[i, : lengths[i]] for i in which])
        by_hand.append(pystoi.stoi(x, y, RATE))
    assert got == pytest.approx(np.mean(by_hand), abs=1e-12)
    assert by_hand[0] != pytest.approx(by_hand[1], abs=1e-6)  # two different groups
    # No speakers: every clip is one speaker.
    x = np.concatenate([ref[i, : lengths[i]] for i in range(6)])
    y = np.concatenate([deg[i, : lengths[i]] for i in range(6)])
    one = stoi_per_speaker(ref, deg, RATE, None, lengths)
    assert one == pytest.approx(pystoi.stoi(x, y, RATE), abs=1e-12)
    assert stoi_per_speaker(ref, ref, RATE, speakers, lengths) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="speaker ids"):
        stoi_per_speaker(ref, deg, RATE, speakers[:3], lengths)


@pytest.mark.parametrize(("module", "metric"), [("pesq", pesq_nb), ("pystoi", stoi_per_speaker)])
def test_missing_extra_names_the_package_and_the_extra(monkeypatch, module, metric):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    x = np.zeros((1, 4000))
    with pytest.raises(
        SpeechExtraMissing, match=rf"`{module}` package: pip install 'vqvae\[speech\]'"
    ):
        metric(x, x, RATE)
