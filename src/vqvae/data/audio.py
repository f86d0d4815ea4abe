"""Audio datasets: WAV files as fixed-length mono waveforms with lengths, labels and speakers.

Specs (``load_audio``):

* ``fsdd:DIR`` — the Free Spoken Digit Dataset: ``{digit}_{speaker}_{index}.wav`` in DIR (or in
  ``DIR/recordings``). Label = the spoken digit, speaker = the name in the file name. Test split =
  recordings 0–4 of every digit and speaker, the dataset's own convention; the rest is training.
* ``wav-folder:DIR`` — a folder of ``.wav`` files laid out like image folders
  (``vqvae.data.images``): ``train/`` and ``test/`` subfolders give the splits (otherwise a
  deterministic 10% test split of the sorted files), class subfolders give the labels (otherwise
  unlabelled). Hidden entries and other extensions are ignored.

How every file becomes a waveform (``read_wav``), in this order:

1. Samples to float: unsigned 8-bit ``(v - 128) / 128``; signed 16/24/32-bit ``v / 2^(bits-1)``
   (24-bit data arrive left-justified in 32 bits, so ``v / 2^31``; narrower widths such as
   12-bit sit left-justified in the next container, as the WAV format prescribes); 32/64-bit
   float as stored. Anything else (64-bit integer PCM, A-law/µ-law, compressed formats) is a
   ``DataError`` naming the file, as are files that are not WAV, truncated or empty files, and
   files with no samples or non-finite ones.
2. Channels: stereo (or more) is averaged to mono.
3. Rate: kept when it equals ``sample_rate`` (FSDD is 8 kHz mono 16-bit, so it is kept as is);
   any other rate is resampled by ``scipy.signal.resample_poly`` with up/down = the reduced
   ratio of the two rates (a polyphase FIR low-pass, Kaiser window).
4. Level (``peak_normalize``): each clip is scaled so that its largest |sample| is 0.95, since
   recording levels differ by ~8× between FSDD speakers; silent clips are left at 0.
5. Length (``fit_length``): a clip shorter than ``length`` samples is zero-padded at the end and
   its ``lengths`` entry records the real samples (``masks`` marks them); a longer clip is cut to
   the ``length``-sample window of greatest energy (the earliest such window on ties), so the
   spoken part survives. The default 6144 samples (0.77 s at 8 kHz) keeps 97% of FSDD whole.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from vqvae.data.common import class_count, split_indices
from vqvae.data.schemes import Scheme, default_model_kind, parse_spec, register_scheme
from vqvae.errors import DataError
from vqvae.files import atomic_path

DEFAULT_SAMPLE_RATE = 8000
DEFAULT_LENGTH = 6144
PEAK_LEVEL = 0.95
FSDD_TEST_INDICES = range(5)  # recordings 0-4 of each digit and speaker (the FSDD README)
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")


def is_audio_spec(spec: str) -> bool:
    """Whether ``spec`` names an audio dataset (``fsdd:`` or ``wav-folder:``).

    A thin alias of ``default_model_kind(spec) == "audio"``, kept until its callers use
    ``vqvae.data.default_model_kind``, the one place that decides which data selects which model.
    """
    return default_model_kind(spec) == "audio"


@dataclass
class AudioSet:
    """Mono waveforms float32 ``(N, length)`` (zero-padded), the real sample count of each
    ``(N,)``, optional int64 labels and speakers, and the file each clip came from."""

    waveforms: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None
    num_classes: int | None
    class_names: list[str] | None = None
    speakers: np.ndarray | None = None
    speaker_names: list[str] | None = None
    files: list[str] | None = None

    def __len__(self) -> int:
        return int(self.waveforms.shape[0])

    @property
    def masks(self) -> np.ndarray:
        """(N, length) bool: True on real samples, False on padding."""
        return np.arange(self.waveforms.shape[1])[None, :] < self.lengths[:, None]


@dataclass
class AudioSplits:
    train: AudioSet
    test: AudioSet
    spec: str
    sample_rate: int
    length: int


# --------------------------------------------------------------------------- one file


def read_wav(path: str | Path, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """One WAV file as mono float32 at ``sample_rate`` (steps 1–3 of the module docstring)."""
    from scipy.io import wavfile  # imported on first use: scipy is slow to import

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown chunks are skipped; that is fine
            rate, data = wavfile.read(path, mmap=False)
    except (ValueError, EOFError, OSError, IndexError, TypeError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: not a readable WAV file ({message})") from exc
    if rate <= 0:
        raise DataError(f"{path}: invalid sample rate {rate}")
    samples = _to_float(data, path)
    if samples.ndim == 2:  # (frames, channels) -> mono
        if samples.shape[1] == 0:
            raise DataError(f"{path}: WAV file has no channels")
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise DataError(f"{path}: WAV file has no samples")
    if not np.isfinite(samples).all():
        raise DataError(f"{path}: WAV file holds non-finite samples (NaN or inf)")
    return resample(samples, rate, sample_rate)


def _to_float(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:  # 32-bit, or 24-bit left-justified by scipy
        return (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    if data.dtype in (np.float32, np.float64):
        return data.astype(np.float32)
    raise DataError(
        f"{path}: samples of type {data.dtype} are not supported (expected 8, 16, 24 or 32-bit "
        "integer PCM or 32/64-bit float)"
    )


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """float32 ``samples`` at ``rate`` Hz -> ``target`` Hz (unchanged when the rates agree)."""
    if rate == target:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly  # imported on first use: scipy is slow to import

    g = gcd(int(rate), int(target))
    out = resample_poly(samples.astype(np.float64), target // g, rate // g)
    return out.astype(np.float32)


def peak_normalize(samples: np.ndarray, level: float = PEAK_LEVEL) -> np.ndarray:
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    return samples if peak == 0.0 else (samples * (level / peak)).astype(np.float32)


def fit_length(samples: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """-> (exactly ``length`` samples, how many of them are real): zero-pad at the end, or keep
    the window of greatest energy (the earliest on ties)."""
    n = len(samples)
    if n <= length:
        out = np.zeros(length, dtype=np.float32)
        out[:n] = samples
        return out, n
    energy = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    start = int(np.argmax(energy[length:] - energy[:-length]))  # argmax: the first maximum
    return samples[start : start + length].astype(np.float32), length


def _clips(
    files: list[Path], sample_rate: int, length: int, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    waves = np.zeros((len(files), length), dtype=np.float32)
    lengths = np.zeros(len(files), dtype=np.int64)
    for i, path in enumerate(files):
        samples = read_wav(path, sample_rate)
        if normalize:
            samples = peak_normalize(samples)
        waves[i], lengths[i] = fit_length(samples, length)
    return waves, lengths


# --------------------------------------------------------------------------- datasets


def load_fsdd(
    root: Path,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    length: int = DEFAULT_LENGTH,
    normalize: bool = True,
) -> tuple[AudioSet, AudioSet]:
    """(train, test) of the Free Spoken Digit Dataset (see the module docstring)."""
    if (root / "recordings").is_dir():
        root = root / "recordings"
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected FSDD's recordings/)")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() == ".wav")
    if not files:
        raise DataError(
            f"{root}: holds no .wav files (expected {{digit}}_{{speaker}}_{{index}}.wav)"
        )
    parsed = []
    for path in files:
        match = _FSDD_NAME.match(path.name)
        if match is None:
            raise DataError(
                f"{path}: name does not follow FSDD's {{digit}}_{{speaker}}_{{index}}.wav"
            )
        parsed.append((int(match[1]), match[2], int(match[3])))
    speaker_names = sorted({s for _, s, _ in parsed})
    speaker_id = {s: i for i, s in enumerate(speaker_names)}
    labels = np.array([d for d, _, _ in parsed], dtype=np.int64)
    speakers = np.array([speaker_id[s] for _, s, _ in parsed], dtype=np.int64)
    test = np.array([i in FSDD_TEST_INDICES for _, _, i in parsed])
    if test.all() or not test.any():
        raise DataError(f"{root}: FSDD split needs recordings with index 0-4 and 5 or more")
    waves, lengths = _clips(files, sample_rate, length, normalize)
    names = [str(d) for d in range(10)]

    def part(mask: np.ndarray) -> AudioSet:
        idx = np.flatnonzero(mask)
        return AudioSet(
            waveforms=waves[idx],
            lengths=lengths[idx],
            labels=labels[idx],
            num_classes=10,
            class_names=names,
            speakers=speakers[idx],
            speaker_names=speaker_names,
            files=[files[i].name for i in idx],
        )

    return part(~test), part(test)


register_scheme(
    Scheme(
        "fsdd",
        "DIR",
        load_fsdd,
        modality="audio",
        model_kind="audio",
        about="the Free Spoken Digit Dataset",
    )
)


def _find_wavs(root: Path) -> list[Path]:
    found = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found += [
            Path(folder) / n
            for n in names
            if not n.startswith(".") and Path(n).suffix.lower() == ".wav"
        ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _labelled_files(root: Path) -> tuple[list[Path], np.ndarray | None, list[str] | None]:
    """WAV files under ``root``; class subfolders (if any) give labels."""
    files = _find_wavs(root)
    loose = [p for p in files if p.parent == root]
    classes = sorted({p.relative_to(root).parts[0] for p in files if p.parent != root})
    if not classes:
        return files, None, None
    if loose:
        raise DataError(
            f"{loose[0]}: WAV file beside class folders ({', '.join(classes[:3])}...) has no label"
        )
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[p.relative_to(root).parts[0]] for p in files], dtype=np.int64)
    return files, labels, classes


def load_wav_folder(
    root: Path,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    length: int = DEFAULT_LENGTH,
    normalize: bool = True,
) -> tuple[AudioSet, AudioSet]:
    """(train, test) of a folder of WAV files (see the module docstring)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_files, train_labels, train_names = _labelled_files(root / "train")
        test_files, test_labels, test_names = _labelled_files(root / "test")
        if train_names != test_names:
            raise DataError(
                f"{root}: train/ and test/ have different class folders "
                f"({train_names} vs {test_names})"
            )
        for files, where in ((train_files, "train"), (test_files, "test")):
            if not files:
                raise DataError(f"{root / where}: holds no .wav files")
        names = train_names
    else:
        files, labels, names = _labelled_files(root)
        if not files:
            raise DataError(f"{root}: holds no .wav files")
        train_idx, test_idx = split_indices(len(files), str(root))
        train_files = [files[i] for i in train_idx]
        test_files = [files[i] for i in test_idx]
        train_labels = None if labels is None else labels[train_idx]
        test_labels = None if labels is None else labels[test_idx]
    num_classes = class_count(train_labels, test_labels, class_names=names)

    def part(files: list[Path], labels: np.ndarray | None) -> AudioSet:
        waves, lengths = _clips(files, sample_rate, length, normalize)
        return AudioSet(
            waveforms=waves,
            lengths=lengths,
            labels=labels,
            num_classes=num_classes,
            class_names=names,
            files=[p.relative_to(root).as_posix() for p in files],
        )

    return part(train_files, train_labels), part(test_files, test_labels)


register_scheme(
    Scheme(
        "wav-folder",
        "DIR",
        load_wav_folder,
        modality="audio",
        model_kind="audio",
        about="WAV files",
    )
)


def load_audio(
    spec: str,
    *,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    length: int = DEFAULT_LENGTH,
    normalize: bool = True,
) -> AudioSplits:
    """Load the audio dataset named by ``spec`` (``fsdd:DIR``, ``wav-folder:DIR`` or any audio
    scheme registered in ``SCHEMES``)."""
    for name, value in (("sample_rate", sample_rate), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{spec}: {name} must be a positive integer, got {value!r}")
    scheme, path = parse_spec(spec, "audio")
    train, test = scheme.load(path, sample_rate=sample_rate, length=length, normalize=normalize)
    return AudioSplits(train=train, test=test, spec=spec, sample_rate=sample_rate, length=length)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples as 16-bit PCM (v · 32768, rounded, clipped to the int16 range;
    the inverse of ``read_wav``'s scaling), atomically."""
    from scipy.io import wavfile  # imported on first use: scipy is slow to import

    pcm = np.clip(np.round(np.asarray(samples, np.float64) * 32768), -32768, 32767).astype(np.int16)
    with atomic_path(path) as tmp:
        wavfile.write(tmp, int(sample_rate), pcm)
    return Path(path)
