"""The pipeline's stages for audio runs (``model.kind = "audio"``; data ``fsdd:DIR`` or
``wav-folder:DIR``). ``vqvae.pipeline.stages`` hands audio runs to these functions.

What an audio run folder holds besides the usual (config, model, checkpoints, logs):

RUN/spectrograms.png         originals above their reconstructions (test clips, one per class)
RUN/audio/                   those clips as WAV files: original_*.wav, reconstruction_*.wav
RUN/codes/                   code sequences (N, length / downsample) of each split
RUN/prior/                   the Transformer prior over code sequences (layout "1d")
RUN/classifier/              the log-mel classifier that measures intelligibility
RUN/evaluate_samples/        WAVs of the samples `vqvae evaluate --samples N` scored
RUN/evaluate_samples.png     their spectrograms

Measured by ``evaluate`` (all on the test split; see ``vqvae.metrics.audio``):

* ``snr_db``, ``lsd_db``: mean per-clip SNR and log-spectral distance over the real samples;
* ``bitrate_bps`` = codes per second × log2 K (× levels), with ``codes_per_second``;
* ``classifier_test_accuracy``: the classifier on real test audio; ``reconstruction_class_
  accuracy`` on the reconstructions; ``intelligibility_ratio`` = the second / the first;
* ``probe_digit_accuracy`` / ``probe_speaker_accuracy`` with their ``*_chance``: logistic
  regression on bags of codes (``vqvae.metrics.probes``), trained on the training split's codes;
* with a prior: held-out ``prior_nll_bits_per_code`` and ``prior_nll_bits_per_second``;
* with ``--samples N``: ``sample_class_accuracy``, how often the classifier hears the class each
  class-conditional sample was drawn for.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae import configs
from vqvae.data import load_codes, save_codes
from vqvae.data.audio import AudioSet, AudioSplits, is_audio_spec, load_audio, write_wav
from vqvae.errors import ConfigError, VQVAEError
from vqvae.files import atomic_write_text
from vqvae.metrics import codebook_stats
from vqvae.metrics.audio import log_spectral_distance, snr_db
from vqvae.metrics.codebook import code_histogram
from vqvae.metrics.probes import chance_accuracy, code_bag, probe_accuracy
from vqvae.models.audio import AudioVQVAE, AudioVQVAEConfig
from vqvae.models.audio_classifier import LogMelClassifier, LogMelClassifierConfig
from vqvae.pipeline import classifier_cache, plots
from vqvae.pipeline.codes import (
    cached_codes,
    check_index_range,
    codes_on_every_rank,
    summed_nll_bits,
)
from vqvae.pipeline.fitting import PriorCodes, fit_prior_on_codes
from vqvae.pipeline.run import RunConfig, RunDir
from vqvae.priors import TransformerPrior, load_prior
from vqvae.training import (
    TrainConfig,
    read_log,
)

BATCH = 64  # clips per evaluation batch
SHOWN = 10  # clips in the pictures and WAV folders: the first test clip of each class
CLASSIFIER_TRAIN = TrainConfig(
    steps=1000, batch_size=64, lr=2e-3, warmup_steps=50, log_every=100, checkpoint_every=0
)


# --- data ------------------------------------------------------------------------------------
def load_for_model(spec: str, config: RunConfig) -> AudioSplits:
    m = config.model
    if not is_audio_spec(spec):
        raise ConfigError(
            f"model.kind = 'audio' needs audio data (fsdd:DIR or wav-folder:DIR), got {spec!r}"
        )
    return load_audio(spec, sample_rate=m.sample_rate, length=m.length, normalize=m.peak_normalize)


def fit_model_to_data(
    spec: str, config: RunConfig, raw: dict[str, Any]
) -> tuple[RunConfig, AudioSplits]:
    """The audio model for ``spec`` (a config of another family is rebuilt as an audio one from
    the keys the user set); ``data_variance`` comes from the training clips' real samples unless
    set."""
    model_raw = raw.get("model", {})
    if not isinstance(config.model, AudioVQVAEConfig):
        model = configs.from_dict(AudioVQVAEConfig, {**model_raw, "kind": "audio"}, "model")
        config = configs.replace(config, "config", model=model)
    data = load_for_model(spec, config)
    if "data_variance" not in model_raw:
        real = data.train.waveforms[data.train.masks]
        variance = max(float(real.var()), 1e-8) if real.size else 1.0
        model = configs.replace(config.model, "model", data_variance=variance)
        config = configs.replace(config, "config", model=model)
    return config, data


def training_tensors(data: AudioSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """What the model's ``training_losses`` reads: (waveforms (N, L), lengths (N,))."""
    return torch.from_numpy(data.train.waveforms), torch.from_numpy(data.train.lengths)


def _shown(part: AudioSet) -> np.ndarray:
    """Indices of the first clip of each class (or the first SHOWN clips if unlabelled)."""
    if part.labels is None:
        return np.arange(min(SHOWN, len(part)))
    _, first = np.unique(part.labels, return_index=True)
    return np.sort(first)[:SHOWN]


def _names(part: AudioSet, idx: np.ndarray) -> list[str]:
    if part.labels is None:
        return [f"clip {i}" for i in idx]
    names = part.class_names or [str(c) for c in range(int(part.num_classes or 0))]
    return [names[int(part.labels[i])] for i in idx]


# --- stage 1 ---------------------------------------------------------------------------------
@torch.no_grad()
def reconstruct_clips(model: AudioVQVAE, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes (N, t) or (N, L, t), reconstructions (N, T)) of clips (N, T), in batches."""
    model.eval()
    codes, recon = [], []
    for i in range(0, len(waves), BATCH):
        idx = model.encode(torch.from_numpy(waves[i : i + BATCH]))
        codes.append(idx)
        recon.append(model.decode_indices(idx)[:, 0])
    return torch.cat(codes).numpy(), torch.cat(recon).numpy()


def reconstruction_metrics(model: AudioVQVAE, test: AudioSet) -> dict[str, float]:
    """SNR, log-spectral distance, bitrate and codebook health on ``test``."""
    codes, recon = reconstruct_clips(model, test.waveforms)
    ref, est = torch.from_numpy(test.waveforms), torch.from_numpy(recon)
    lengths = torch.from_numpy(test.lengths)
    levels = model.quantizer.index_levels
    counts = code_histogram(torch.from_numpy(codes), model.quantizer.codebook_size, levels)
    return {
        "snr_db": float(snr_db(ref, est, lengths).mean()),
        "lsd_db": float(log_spectral_distance(ref, est, lengths).mean()),
        "bitrate_bps": model.bits_per_second,
        "codes_per_second": model.config.codes_per_second,
        "codes_per_clip": model.config.codes_per_clip,
        "codebook_size": model.quantizer.codebook_size,
        **codebook_stats(counts, max(1, levels)),
    }


def write_training_pictures(run: RunDir, model: AudioVQVAE, data: AudioSplits) -> None:
    """Spectrograms and WAVs of test clips and their reconstructions; codebook usage; losses."""
    idx = _shown(data.test)
    originals = data.test.waveforms[idx]
    codes, recon = reconstruct_clips(model, originals)
    names = _names(data.test, idx)
    plots.plot_spectrograms(
        run.path / "spectrograms.png",
        [originals, recon],
        ["original", "reconstruction"],
        data.sample_rate,
        names,
    )
    folder = run.path / "audio"
    for i, name in enumerate(names):
        write_wav(folder / f"original_{i}_{name}.wav", originals[i], data.sample_rate)
        write_wav(folder / f"reconstruction_{i}_{name}.wav", recon[i], data.sample_rate)
    all_codes, _ = reconstruct_clips(model, data.test.waveforms)
    levels = model.quantizer.index_levels
    counts = code_histogram(torch.from_numpy(all_codes), model.quantizer.codebook_size, levels)
    plots.plot_codebook_usage(
        run.path / "codebook_usage.png", counts.numpy(), "code usage on the test split"
    )
    keys = ["train/loss", "train/recon", "train/stft", "train/commitment", "train/snr"]
    keys += ["train/perplexity", "train/codebook_usage"]
    plots.plot_loss_curves(
        run.path / "loss_curves.png", read_log(run.path / "log.jsonl"), keys, "audio VQ-VAE"
    )


def reconstruct(run: RunDir, config: RunConfig, spec: str, out: str | Path, n: int = 10) -> Path:
    """Write ``n`` test clips and their reconstructions (WAV) and their spectrograms to the
    folder ``out``."""
    model = AudioVQVAE.from_pretrained(run.require_model())
    data = load_for_model(spec, config)
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    originals = data.test.waveforms[:n]
    _, recon = reconstruct_clips(model, originals)
    out = Path(out)
    for i in range(len(originals)):
        write_wav(out / f"original_{i}.wav", originals[i], data.sample_rate)
        write_wav(out / f"reconstruction_{i}.wav", recon[i], data.sample_rate)
    plots.plot_spectrograms(
        out / "spectrograms.png",
        [originals, recon],
        ["original", "reconstruction"],
        data.sample_rate,
    )
    return out


# --- the index level -------------------------------------------------------------------------
def encode_dataset(
    run: RunDir, config: RunConfig, spec: str, out: str | Path, split: str = "train"
) -> Path:
    model = AudioVQVAE.from_pretrained(run.require_model())
    data = load_for_model(spec, config)
    part = data.train if split == "train" else data.test
    codes, _ = reconstruct_clips(model, part.waveforms)
    meta = {
        "split": split,
        "data": spec,
        "codes_per_second": model.config.codes_per_second,
        "sample_rate": model.config.sample_rate,
    }
    save_codes(out, codes, part.labels, model.quantizer.codebook_size, meta)
    return Path(out)


def decode_codes(run: RunDir, codes_path: str | Path, out: str | Path, n: int = 10) -> Path:
    """Decode the first ``n`` code sequences of a codes file to WAVs (+ spectrograms) in the
    folder ``out``."""
    model = AudioVQVAE.from_pretrained(run.require_model()).eval()
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    indices = load_codes(codes_path).indices[:n]
    check_index_range(codes_path, indices, model.quantizer.codebook_size)
    want = 2 + (model.quantizer.index_levels > 0)
    if indices.ndim != want:
        raise VQVAEError(
            f"{codes_path}: index arrays of shape {tuple(indices.shape[1:])} are not code "
            f"sequences of this model"
        )
    waves = model.decode_indices(torch.from_numpy(indices))[:, 0].numpy()
    out = Path(out)
    rate = model.config.sample_rate
    for i, wave in enumerate(waves):
        write_wav(out / f"decoded_{i}.wav", wave, rate)
    plots.plot_spectrograms(out / "spectrograms.png", [waves], ["decoded"], rate)
    return out


def _cached_codes(run: RunDir, model: AudioVQVAE, data: AudioSplits, split: str):
    """The run's code sequences of ``split``, re-encoded when the model is newer than them."""
    meta = {"class_names": getattr(data, split).class_names}
    k = model.quantizer.codebook_size
    return cached_codes(
        run, data, split, lambda part: reconstruct_clips(model, part.waveforms)[0], k, meta
    )


def _codes_on_every_rank(run: RunDir, model: AudioVQVAE, data: AudioSplits, split: str):
    """Rank 0 fills the codes cache; the other ranks read what it wrote."""
    return codes_on_every_rank(run, split, lambda: _cached_codes(run, model, data, split))


# --- stage 2: the Transformer prior over code sequences --------------------------------------
def build_prior(
    config: RunConfig, codebook_size: int, length: int, num_classes: int
) -> tuple[RunConfig, TransformerPrior]:
    """The ``transformer`` section with what the codes decide filled in: K, the classes, the
    "1d" layout and ``max_length`` = the code sequence length. Audio runs always use the
    Transformer (``prior_kind`` is for image runs: code sequences are not 2D maps)."""
    filled = configs.replace(
        config.transformer,
        "transformer",
        codebook_size=codebook_size,
        num_classes=num_classes,
        layout="1d",
        max_length=length,
    )
    return configs.replace(config, "config", transformer=filled), TransformerPrior(filled)


def train_prior(
    run: RunDir,
    config: RunConfig,
    spec: str,
    *,
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, float]:
    model = AudioVQVAE.from_pretrained(run.require_model())
    if model.quantizer.index_levels:
        raise VQVAEError(
            f"{run.path}: a prior over residual (multi-level) codes is not supported; train "
            "the audio model with a single-level quantizer"
        )
    data = load_for_model(spec, config)
    codes = PriorCodes.of(
        config, data.train.num_classes, lambda split: _codes_on_every_rank(run, model, data, split)
    )
    torch.manual_seed(config.prior_train.seed)
    config, prior = build_prior(
        config, model.quantizer.codebook_size, model.config.codes_per_clip, codes.num_classes
    )
    main = fit_prior_on_codes(
        run, config, spec, prior, codes, resume=resume, show_progress=show_progress
    )
    if not main:
        return {}  # rank 0 measures the prior
    return prior_metrics(prior, codes.test.indices, codes.labels("test"), model.config)


@torch.no_grad()
def prior_metrics(
    prior, indices: np.ndarray, labels: np.ndarray | None, model_config: AudioVQVAEConfig
) -> dict[str, float]:
    """Held-out NLL: bits per code, per second of audio, and per audio sample."""
    per_code = summed_nll_bits(prior, indices, labels, batch_size=BATCH) / max(1, indices.size)
    return {
        "prior_nll_bits_per_code": per_code,
        "prior_nll_bits_per_second": per_code * model_config.codes_per_second,
        "prior_nll_bits_per_sample": per_code / model_config.downsample,
        "prior_uniform_bits_per_code": math.log2(prior.config.codebook_size),
    }


# --- generation ------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    model: AudioVQVAE,
    prior: TransformerPrior,
    labels: torch.Tensor | None,
    n: int,
    options: Any,
    generator: torch.Generator,
) -> np.ndarray:
    """``n`` waveforms (n, T): code sequences from the prior (of class ``labels``), decoded."""
    out = []
    kwargs = options.kwargs() if options is not None else {}
    for i in range(0, n, BATCH):
        m = min(BATCH, n - i)
        lab = None if labels is None else labels[i : i + m]
        codes = prior.sample(m, (model.config.codes_per_clip,), lab, generator=generator, **kwargs)
        out.append(model.decode_indices(codes)[:, 0])
    return torch.cat(out).numpy() if out else np.zeros((0, model.config.length), np.float32)


def _load_run(run: RunDir) -> tuple[AudioVQVAE, TransformerPrior]:
    model = AudioVQVAE.from_pretrained(run.require_model()).eval()
    return model, load_prior(run.require_prior())


def _class_names(run: RunDir, count: int) -> list[str]:
    """The data's class names as the codes cache recorded them (the prior was trained on those
    codes), else the class numbers. FSDD's are the digits themselves."""
    path = run.codes_dir / "train.safetensors"
    names = load_codes(path).meta.get("class_names") if path.is_file() else None
    if isinstance(names, list) and len(names) == count:
        return [str(name) for name in names]
    return [str(c) for c in range(count)]


def sample(
    run_path: str | Path,
    n: int,
    out: str | Path,
    *,
    label: int | None = None,
    options: Any = None,
    seed: int = 0,
) -> Path:
    """Draw ``n`` clips (``n`` of every class for a conditional prior without ``label``) into
    the folder ``out``: ``sample_<class>_<i>.wav`` and ``spectrograms.png`` (one row per class)."""
    run = RunDir(run_path)
    model, prior = _load_run(run)
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    classes = prior.config.num_classes
    if label is not None and not classes:
        raise ConfigError("--label given but the prior is unconditional")
    if label is not None and not 0 <= label < classes:
        raise ConfigError(f"--label must be in [0, {classes}), got {label}")
    wanted = [label] if label is not None else (list(range(classes)) if classes else [None])
    g = torch.Generator().manual_seed(seed)
    names = _class_names(run, classes)
    out = Path(out)
    rows, row_names = [], []
    for c in wanted:
        labels = None if c is None else torch.full((n,), c)
        waves = generate(model, prior, labels, n, options, g)
        tag = "unconditional" if c is None else names[c]
        for i, wave in enumerate(waves):
            write_wav(out / f"sample_{tag}_{i}.wav", wave, model.config.sample_rate)
        rows.append(waves[:8])
        row_names.append(tag)
    plots.plot_spectrograms(out / "spectrograms.png", rows, row_names, model.config.sample_rate)
    return out


# --- evaluation ------------------------------------------------------------------------------
def load_or_train_classifier(
    directory: str | Path, data: AudioSplits, show_progress: bool = True
) -> tuple[LogMelClassifier, float]:
    """The cached log-mel classifier for ``data`` in ``directory`` (trained on the real training
    clips first if missing or made for other data) and its accuracy on the real test clips."""
    made_for = {"data": data.spec, "sample_rate": data.sample_rate, "length": data.length}

    def train() -> tuple[LogMelClassifier, float]:
        classifier_cache.require_labels(data, "intelligibility needs labelled audio")
        config = LogMelClassifierConfig(
            sample_rate=data.sample_rate, num_classes=int(data.train.num_classes)
        )
        model = classifier_cache.fit_classifier(
            lambda: LogMelClassifier(config),
            torch.from_numpy(data.train.waveforms),
            torch.from_numpy(data.train.labels),
            CLASSIFIER_TRAIN,
            show_progress,
        )
        accuracy = _accuracy(model, data.test.waveforms, data.test.labels)
        return model.eval(), accuracy

    return classifier_cache.load_or_train(
        directory, made_for, LogMelClassifier.from_pretrained, train
    )


def _accuracy(model: LogMelClassifier, waves: np.ndarray, labels: np.ndarray) -> float:
    predicted = model.predict(torch.from_numpy(np.ascontiguousarray(waves, np.float32)))
    return float((predicted.numpy() == labels).mean())


def probe_metrics(train_codes, test_codes, data: AudioSplits, k: int) -> dict[str, float]:
    """Logistic-regression probes from bags of codes to the class and the speaker."""
    metrics: dict[str, float] = {}
    train_bag, test_bag = code_bag(train_codes.indices, k), code_bag(test_codes.indices, k)
    targets = {"digit": (data.train.labels, data.test.labels)}
    if data.train.speakers is not None:
        targets["speaker"] = (data.train.speakers, data.test.speakers)
    for name, (y_train, y_test) in targets.items():
        if y_train is None or len(np.unique(y_train)) < 2:
            continue
        metrics[f"probe_{name}_accuracy"] = probe_accuracy(train_bag, y_train, test_bag, y_test)
        metrics[f"probe_{name}_chance"] = chance_accuracy(y_train, y_test)
    return metrics


def evaluate(
    run: RunDir,
    config: RunConfig,
    spec: str,
    *,
    samples: int = 0,
    classifier_dir: str | Path | None = None,
    options: Any = None,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Measure an audio run (see the module docstring) and write RUN/metrics.json."""
    model = AudioVQVAE.from_pretrained(run.require_model()).eval()
    data = load_for_model(spec, config)
    metrics: dict[str, Any] = reconstruction_metrics(model, data.test)
    test = data.test
    if test.labels is not None and data.train.labels is not None:
        classifier, accuracy = load_or_train_classifier(
            classifier_dir or run.path / "classifier", data, show_progress
        )
        _, recon = reconstruct_clips(model, test.waveforms)
        recon_accuracy = _accuracy(classifier, recon, test.labels)
        metrics["classifier_test_accuracy"] = accuracy
        metrics["reconstruction_class_accuracy"] = recon_accuracy
        metrics["intelligibility_ratio"] = recon_accuracy / max(accuracy, 1e-12)
    if not model.quantizer.index_levels:
        train_codes = _cached_codes(run, model, data, "train")
        test_codes = _cached_codes(run, model, data, "test")
        metrics.update(probe_metrics(train_codes, test_codes, data, model.quantizer.codebook_size))
    has_prior = (run.prior_model_dir / "model.safetensors").is_file()
    if has_prior:
        prior = load_prior(run.prior_model_dir)
        codes = _cached_codes(run, model, data, "test")
        labels = codes.labels if prior.config.num_classes else None
        metrics.update(prior_metrics(prior, codes.indices, labels, model.config))
    if samples:
        metrics.update(
            sample_quality(run, model, data, samples, classifier_dir, options, seed, show_progress)
        )
    metrics["data"] = data.spec
    atomic_write_text(run.metrics_file, json.dumps(metrics, indent=2) + "\n")
    return metrics


def sample_quality(
    run: RunDir,
    model: AudioVQVAE,
    data: AudioSplits,
    n: int,
    classifier_dir: str | Path | None,
    options: Any,
    seed: int,
    show_progress: bool = True,
) -> dict[str, float]:
    """Draw ``n`` samples (balanced over the classes), keep them as WAVs and spectrograms in
    the run folder, and measure how often the classifier hears the class asked for."""
    if n < 1:
        raise VQVAEError(f"--samples must be >= 1, got {n}")
    prior = load_prior(run.require_prior())
    classes = prior.config.num_classes
    labels = torch.arange(n) % classes if classes else None
    g = torch.Generator().manual_seed(seed)
    waves = generate(model, prior, labels, n, options, g)
    folder = run.path / "evaluate_samples"
    if folder.exists():
        shutil.rmtree(folder)
    rate = model.config.sample_rate
    for i, wave in enumerate(waves):
        tag = "unconditional" if labels is None else str(int(labels[i]))
        write_wav(folder / f"sample_{i}_{tag}.wav", wave, rate)
    per_row = max(1, classes) if classes else 8
    rows = [waves[i : i + per_row] for i in range(0, min(len(waves), 4 * per_row), per_row)]
    plots.plot_spectrograms(
        run.path / "evaluate_samples.png",
        rows,
        [f"samples {i + 1}" for i in range(len(rows))],
        rate,
        [str(c) for c in range(classes)] if classes else None,
    )
    metrics: dict[str, float] = {"sample_count": n}
    if labels is not None and data.train.labels is not None:
        classifier, _ = load_or_train_classifier(
            classifier_dir or run.path / "classifier", data, show_progress
        )
        metrics["sample_class_accuracy"] = _accuracy(classifier, waves, labels.numpy())
    if options is not None and options.guidance_scale is not None:
        metrics["sample_guidance_scale"] = options.guidance_scale
    if options is not None and options.temperature != 1.0:
        metrics["sample_temperature"] = options.temperature
    return metrics
