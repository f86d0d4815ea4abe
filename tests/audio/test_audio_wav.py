"""WAV reading (sample widths, channels, resampling), the length rule, and the FSDD and
wav-folder layouts, with every documented error path."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from vqvae.data.audio import (
    PEAK_LEVEL,
    fit_length,
    is_audio_spec,
    load_audio,
    read_wav,
    write_wav,
)
from vqvae.errors import DataError

SHARED_FSDD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fsdd"


def _riff(path: Path, fmt_tag: int, channels: int, rate: int, bits: int, data: bytes) -> Path:
    """A WAV file written byte by byte (independent of scipy's writer)."""
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_sample_widths_are_scaled_to_unit_range(tmp_path):
    half = {
        "u8": np.array([128, 192, 64, 255], np.uint8),
        "i16": np.array([0, 16384, -16384, 32767], np.int16),
        "i32": np.array([0, 2**30, -(2**30), 2**31 - 1], np.int32),
        "f32": np.array([0, 0.5, -0.5, 1.0], np.float32),
        "f64": np.array([0, 0.5, -0.5, 1.0], np.float64),
    }
    for name, data in half.items():
        wavfile.write(tmp_path / f"{name}.wav", 8000, data)
        x = read_wav(tmp_path / f"{name}.wav")
        assert x.dtype == np.float32
        np.testing.assert_allclose(x[:3], [0, 0.5, -0.5], atol=1e-6, err_msg=name)
        assert 0.99 < x[3] <= 1.0
    # 24-bit PCM, three bytes per sample, little-endian two's complement.
    values = [0, 2**22, -(2**22), -(2**23)]
    data = b"".join(v.to_bytes(3, "little", signed=True) for v in values)
    x = read_wav(_riff(tmp_path / "i24.wav", 1, 1, 8000, 24, data))
    np.testing.assert_allclose(x, [0, 0.5, -0.5, -1.0], atol=1e-7)


def test_stereo_is_averaged_and_other_rates_resampled(tmp_path):
    stereo = np.stack([np.full(800, 0.2), np.full(800, 0.6)], axis=1).astype(np.float32)
    wavfile.write(tmp_path / "s.wav", 8000, stereo)
    np.testing.assert_allclose(read_wav(tmp_path / "s.wav"), 0.4, atol=1e-6)
    t = np.arange(16000) / 16000
    wavfile.write(tmp_path / "r.wav", 16000, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    x = read_wav(tmp_path / "r.wav", 8000)
    assert len(x) == 8000  # one second at the target rate
    peak_hz = np.argmax(np.abs(np.fft.rfft(x))) * 8000 / len(x)
    assert abs(peak_hz - 440) <= 1
    np.testing.assert_allclose(np.abs(x[100:-100]).max(), 0.5, atol=0.01)
    wavfile.write(tmp_path / "k.wav", 8000, np.zeros(10, np.int16))
    assert len(read_wav(tmp_path / "k.wav", 8000)) == 10  # the target rate: kept as is


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"hello, not audio at all"), "not a readable WAV"),
        (lambda p: p.write_bytes(b""), "not a readable WAV"),
        (lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfm"), "not a readable WAV"),
        (lambda p: wavfile.write(p, 8000, np.zeros(0, np.int16)), "no samples"),
        (lambda p: wavfile.write(p, 8000, np.arange(4, dtype=np.int64)), "int64"),
        (lambda p: _riff(p, 6, 1, 8000, 8, b"\x00" * 8), "ALAW"),  # A-law
        (
            lambda p: wavfile.write(p, 8000, np.array([0.1, np.nan], np.float32)),
            "non-finite",
        ),
    ],
)
def test_malformed_audio_is_a_data_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(DataError, match=message) as info:
        read_wav(path)
    assert str(path) in str(info.value)


def test_missing_file():
    with pytest.raises(DataError, match="no such file"):
        read_wav("/nonexistent/x.wav")


def test_fit_length_pads_or_keeps_the_loudest_window():
    out, n = fit_length(np.ones(3, np.float32), 5)
    assert n == 3 and out.tolist() == [1, 1, 1, 0, 0]
    x = np.zeros(20, np.float32)
    x[11:14] = 1.0
    out, n = fit_length(x, 4)
    assert n == 4 and out.sum() == 3  # the whole burst survives
    out, _ = fit_length(np.ones(10, np.float32), 4)  # ties: the earliest window
    assert out.tolist() == [1, 1, 1, 1]


def _fsdd(root: Path, speakers=("anna", "bob"), indices=range(7), digits=range(3)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for d in digits:
        for s in speakers:
            for i in indices:
                x = (rng.normal(size=300 + 10 * i) * 1000).astype(np.int16)
                wavfile.write(root / f"{d}_{s}_{i}.wav", 8000, x)
    return root


def test_fsdd_layout_labels_speakers_and_split(tmp_path):
    _fsdd(tmp_path / "fsdd" / "recordings")
    data = load_audio(f"fsdd:{tmp_path / 'fsdd'}", length=320)  # the parent folder works too
    assert len(data.train) == 3 * 2 * 2 and len(data.test) == 3 * 2 * 5
    assert all(int(f.split("_")[2][:-4]) < 5 for f in data.test.files)
    assert data.train.speaker_names == ["anna", "bob"]
    for part in (data.train, data.test):
        assert part.waveforms.shape[1] == 320 and part.waveforms.dtype == np.float32
        digits = [int(f[0]) for f in part.files]
        speakers = [part.speaker_names[s] for s in part.speakers]
        assert part.labels.tolist() == digits
        assert speakers == [f.split("_")[1] for f in part.files]
        np.testing.assert_allclose(np.abs(part.waveforms).max(1), PEAK_LEVEL, rtol=1e-5)
        assert part.lengths.tolist() == [
            min(300 + 10 * int(f.split("_")[2][:-4]), 320) for f in part.files
        ]
        assert (part.waveforms[~part.masks] == 0).all()


def test_fsdd_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_audio(f"fsdd:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .wav files"):
        load_audio(f"fsdd:{tmp_path / 'empty'}")
    root = _fsdd(tmp_path / "odd")
    wavfile.write(root / "seven.wav", 8000, np.zeros(10, np.int16))
    with pytest.raises(DataError, match="seven.wav"):
        load_audio(f"fsdd:{root}")
    only_train = _fsdd(tmp_path / "train_only", indices=range(5, 7))
    with pytest.raises(DataError, match="index 0-4"):
        load_audio(f"fsdd:{only_train}")
    with pytest.raises(DataError, match="expected one of"):
        load_audio("wav:foo")
    with pytest.raises(DataError, match="positive integer"):
        load_audio(f"fsdd:{root}", length=0)


def test_wav_folder_classes_and_splits(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "a" / cls).mkdir(parents=True)
        for i in range(10):
            wavfile.write(tmp_path / "a" / cls / f"{i}.wav", 8000, np.ones(100, np.int16))
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    data = load_audio(f"wav-folder:{tmp_path / 'a'}", length=128)
    assert len(data.train) == 18 and len(data.test) == 2
    assert data.train.class_names == ["cat", "dog"] and data.train.num_classes == 2
    for part in (data.train, data.test):
        assert part.labels.tolist() == [0 if f.startswith("cat") else 1 for f in part.files]
        assert part.speakers is None
    for split in ("train", "test"):
        (tmp_path / "b" / split).mkdir(parents=True)
        wavfile.write(tmp_path / "b" / split / "x.wav", 16000, np.ones(320, np.int16))
    data = load_audio(f"wav-folder:{tmp_path / 'b'}", length=256)
    assert len(data.train) == len(data.test) == 1 and data.train.labels is None
    assert data.train.lengths.tolist() == [160]  # 320 samples at 16 kHz -> 160 at 8 kHz
    wavfile.write(tmp_path / "a" / "loose.wav", 8000, np.ones(100, np.int16))
    with pytest.raises(DataError, match="loose.wav.*no label"):
        load_audio(f"wav-folder:{tmp_path / 'a'}")
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match="no .wav files"):
        load_audio(f"wav-folder:{tmp_path / 'c'}")


def test_write_wav_round_trip(tmp_path):
    x = np.linspace(-1.2, 1.2, 50).astype(np.float32)
    path = write_wav(tmp_path / "o.wav", x, 8000)
    rate, data = wavfile.read(path)
    assert rate == 8000 and data.dtype == np.int16
    np.testing.assert_allclose(read_wav(path), np.clip(x, -1, 32767 / 32768), atol=0.5 / 32768)


def test_is_audio_spec():
    assert is_audio_spec("fsdd:x") and is_audio_spec("wav-folder:y")
    assert not is_audio_spec("mnist:x") and not is_audio_spec("digits")


def test_real_fsdd():
    if not (SHARED_FSDD / "recordings").is_dir():
        pytest.skip(f"shared dataset folder {SHARED_FSDD} is absent (real FSDD not available)")
    data = load_audio(f"fsdd:{SHARED_FSDD / 'recordings'}", length=6144)
    assert len(data.train) == 2700 and len(data.test) == 300
    assert data.train.speaker_names == sorted(
        ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    )
    for part in (data.train, data.test):
        assert set(np.unique(part.labels)) == set(range(10))
        assert np.bincount(part.speakers).tolist() == [len(part) // 6] * 6
    # 8 kHz mono 16-bit: kept at its rate; before normalisation the samples are k / 32768.
    raw = read_wav(SHARED_FSDD / "recordings" / "0_jackson_0.wav", 8000)
    rate, pcm = wavfile.read(SHARED_FSDD / "recordings" / "0_jackson_0.wav")
    assert rate == 8000 and len(raw) == len(pcm)
    np.testing.assert_array_equal(raw * 32768, pcm.astype(np.float32))
