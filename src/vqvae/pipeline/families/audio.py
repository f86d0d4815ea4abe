"""The audio family (``model.kind = "audio"``; data ``fsdd:DIR`` or ``wav-folder:DIR``): a 1D
VQ-VAE whose code sequences a Transformer prior models.

What an audio run folder holds besides the usual (config, model, checkpoints, logs):

RUN/spectrograms.png         originals above their reconstructions (test clips, one per class)
RUN/audio/                   those clips as WAV files: original_*.wav, reconstruction_*.wav
RUN/codes/                   code sequences (N, length / downsample) of each split
RUN/prior/                   the Transformer prior over code sequences (layout "1d"; "2d"
                             over a residual quantizer's (L, T') level × time maps)
RUN/classifier/              the log-mel classifier that measures intelligibility
RUN/evaluate_samples/        WAVs of the samples `vqvae evaluate --samples N` scored
RUN/evaluate_samples.png     their spectrograms

Measured by ``evaluate`` (all on the test split; see ``vqvae.metrics.audio``):

* ``snr_db``, ``lsd_db``: mean per-clip SNR and log-spectral distance over the real samples;
* ``bitrate_bps`` = codes per second × log2 K (× levels), with ``codes_per_second``;
* ``classifier_test_accuracy``: the classifier on real test audio; ``reconstruction_class_
  accuracy`` on the reconstructions; ``intelligibility_ratio`` = the second / the first;
* ``probe_digit_accuracy`` / ``probe_speaker_accuracy`` with their ``*_chance``: logistic
  regression on bags of codes, trained on the training split's codes;
* ``pesq_nb`` (narrowband PESQ, mean over the ``pesq_nb_scored`` clips PESQ scores;
  ``pesq_nb_unscored`` it refused) and ``stoi`` (each speaker's clips concatenated, averaged
  over the speakers; a folder without speakers is one speaker) of the reconstructions; omitted,
  with one line on stderr saying why, without the ``speech`` extra;
* with an autoregressive prior, added by ``vqvae evaluate`` from the codec layer above this one
  (``vqvae.codec.coded_rate``): ``bits_per_second_coded`` and its companions, the real payload
  of an archive of test clips;
* with a prior: held-out ``prior_nll_bits_per_code``, ``_per_second`` and ``_per_sample``;
* a residual quantizer (L levels): each depth k = 1..L's measures of the outputs decoded from
  the first k levels, ``levels_{k}_snr_db``, ``_lsd_db``, ``_pesq_nb``, ``_stoi``…, its raw
  ``levels_{k}_bitrate_bps`` and with a prior ``levels_{k}_prior_nll_bits_per_second``
  (``ModelFamily.depth_metrics``);
* with ``--samples N``: ``sample_class_accuracy``, how often the classifier hears the class each
  class-conditional sample was drawn for.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vqvae import configs
from vqvae.data import default_model_kind, load_codes
from vqvae.data.audio import load_audio, write_wav
from vqvae.errors import ConfigError
from vqvae.evaluation import LogMelClassifier, audio_classifier, class_accuracy, probe_scores
from vqvae.metrics.audio import (
    SpeechExtraMissing,
    log_spectral_distance,
    pesq_nb,
    snr_db,
    stoi_per_speaker,
)
from vqvae.pipeline import plots
from vqvae.pipeline.families.base import ModelFamily, register_family
from vqvae.priors import TransformerPriorConfig

SHOWN = 10  # clips in the pictures after training: the first test clip of each class


@register_family
class AudioFamily(ModelFamily):
    kind = "audio"
    ships_classifier = True
    title = "audio VQ-VAE"
    loss_keys = (
        "train/loss",
        "train/recon",
        "train/stft",
        "train/commitment",
        "train/snr",
        "train/perplexity",
        "train/codebook_usage",
    )
    batch = sample_batch = 64  # clips

    def load_data(self, spec: str, model_config: Any) -> Any:
        if default_model_kind(spec) != "audio":
            raise ConfigError(
                f"model.kind = 'audio' needs audio data (fsdd:DIR or wav-folder:DIR), got {spec!r}"
            )
        m = model_config
        return load_audio(
            spec, sample_rate=m.sample_rate, length=m.length, normalize=m.peak_normalize
        )

    def fit_config(self, spec, config):
        """``data_variance`` from the training clips' real samples unless set; the prior a
        Transformer over code sequences unless another kind was chosen."""
        data = self.load_data(spec, config.model)
        model = config.model
        if model.data_variance is None:
            real = data.train.waveforms[data.train.masks]
            variance = max(float(real.var()), 1e-8) if real.size else 1.0
            model = configs.replace(model, "model", data_variance=variance)
        changes: dict[str, Any] = {"model": model}
        if config.prior == type(config.prior)() and config.prior.kind == "pixelcnn":
            changes["prior"] = TransformerPriorConfig()  # the default prior, for sequences
        return configs.replace(config, "config", **changes), data

    def inputs(self, part: Any, model: nn.Module | None = None) -> np.ndarray:
        return part.waveforms

    def training_tensors(self, data: Any) -> tuple[Tensor, Tensor]:
        """(waveforms (N, L), lengths (N,)): the loss only counts real samples."""
        return torch.from_numpy(data.train.waveforms), torch.from_numpy(data.train.lengths)

    def code_grid(self, model: nn.Module) -> tuple[int, ...]:
        return (model.config.codes_per_clip,)

    def finish(self, decoded: Tensor) -> Tensor:
        return decoded[:, 0]  # (B, 1, T) -> (B, T)

    def fidelity(self, model, part, outputs) -> dict[str, float]:
        ref, est = torch.from_numpy(part.waveforms), torch.from_numpy(outputs)
        lengths = torch.from_numpy(part.lengths)
        return {
            "snr_db": float(snr_db(ref, est, lengths).mean()),
            "lsd_db": float(log_spectral_distance(ref, est, lengths).mean()),
        }

    def depth_fidelity(self, model, part, outputs) -> dict[str, float]:
        """Each residual depth's SNR and LSD, and its PESQ and STOI (``levels_{k}_pesq_nb``…)."""
        return {**self.fidelity(model, part, outputs), **self.speech_metrics(model, part, outputs)}

    def rates(self, model: nn.Module) -> dict[str, float]:
        return {
            "bitrate_bps": model.bits_per_second,
            "codes_per_second": model.config.codes_per_second,
            "codes_per_clip": model.config.codes_per_clip,
        }

    def item_sizes(self, model: nn.Module) -> dict[str, float]:
        c = model.config
        return {"second": c.length / c.sample_rate, "sample": c.length}

    def codes_meta(self, model: nn.Module, part: Any) -> dict[str, Any]:
        c = model.config
        return {
            "class_names": part.class_names,
            "codes_per_second": c.codes_per_second,
            "sample_rate": c.sample_rate,
        }

    def class_names(self, run, count: int) -> list[str]:
        """The data's class names as the codes cache recorded them (the prior was trained on
        those codes), else the class numbers. FSDD's are the digits themselves."""
        path = run.codes_file("train")
        names = load_codes(path).meta.get("class_names") if path.is_file() else None
        if isinstance(names, list) and len(names) == count:
            return [str(name) for name in names]
        return super().class_names(run, count)

    def save_outputs(self, model: nn.Module, out: str | Path, rows: dict[str, np.ndarray]) -> Path:
        """WAV files ``<row>_<i>.wav`` and ``spectrograms.png`` (one row each) in folder ``out``."""
        out, rate = Path(out), model.config.sample_rate
        for name, waves in rows.items():
            for i, wave in enumerate(waves):
                write_wav(out / f"{name}_{i}.wav", wave, rate)
        shown = [waves[:SHOWN] for waves in rows.values()]
        plots.plot_spectrograms(out / "spectrograms.png", shown, list(rows), rate)
        return out

    def write_examples(self, run, model, data) -> None:
        """The first test clip of each class and its reconstruction: WAVs in RUN/audio/ and
        RUN/spectrograms.png."""
        part = data.test
        if part.labels is None:
            idx = np.arange(min(SHOWN, len(part)))
            names = [f"clip {i}" for i in idx]
        else:
            idx = np.sort(np.unique(part.labels, return_index=True)[1])[:SHOWN]
            classes = part.class_names or [str(c) for c in range(int(part.num_classes or 0))]
            names = [classes[int(part.labels[i])] for i in idx]
        originals = part.waveforms[idx]
        recon = self.reconstruct(model, originals)
        plots.plot_spectrograms(
            run.path / "spectrograms.png",
            [originals, recon],
            ["original", "reconstruction"],
            data.sample_rate,
            names,
        )
        for i, name in enumerate(names):
            write_wav(
                run.path / "audio" / f"original_{i}_{name}.wav", originals[i], data.sample_rate
            )
            write_wav(
                run.path / "audio" / f"reconstruction_{i}_{name}.wav", recon[i], data.sample_rate
            )

    def extra_metrics(self, run, model, data, classifier_dir) -> dict[str, Any]:
        """Intelligibility (a log-mel classifier on real and reconstructed test clips) and
        probes from bags of codes to the class and the speaker."""
        metrics: dict[str, Any] = {}
        test = data.test
        if test.labels is not None and data.train.labels is not None:
            classifier, accuracy = audio_classifier(classifier_dir or run.path / "classifier", data)
            metrics.update(self.intelligibility(model, test, classifier, accuracy))
        if not model.quantizer.index_levels:
            train, test_codes = (self.split_codes(run, model, data, s) for s in ("train", "test"))
            targets = {"digit": (data.train.labels, test.labels)}
            if data.train.speakers is not None:
                targets["speaker"] = (data.train.speakers, test.speakers)
            k = model.quantizer.codebook_size
            metrics.update(probe_scores(train.levels[0], test_codes.levels[0], k, targets))
        metrics.update(self.speech_metrics(model, test))
        return metrics

    def speech_metrics(
        self, model: nn.Module, test: Any, recon: np.ndarray | None = None
    ) -> dict[str, float]:
        """Narrowband PESQ and per-speaker STOI of the test clips' reconstructions (``recon``,
        or the model's; see the module docstring); none, saying why on stderr, without the
        ``speech`` extra."""
        if recon is None:
            recon = self.reconstruct(model, test.waveforms)
        rate, ref, lengths = model.config.sample_rate, test.waveforms, test.lengths
        try:
            pesq = pesq_nb(ref, recon, rate, lengths)
            stoi = stoi_per_speaker(ref, recon, rate, test.speakers, lengths)
        except SpeechExtraMissing as exc:
            _note(f"no pesq_nb or stoi: {exc}")
            return {}
        metrics = {"pesq_nb_scored": pesq.scored, "pesq_nb_unscored": pesq.unscored, "stoi": stoi}
        if pesq.scored:  # no NaN in metrics.json
            metrics["pesq_nb"] = pesq.mean
        return metrics

    def intelligibility(
        self, model: nn.Module, test: Any, classifier: Any, accuracy: float | None = None
    ) -> dict[str, float]:
        """The classifier's accuracy on the real test clips (``accuracy`` when known) and on
        their reconstructions, and the ratio of the two."""
        if accuracy is None:
            accuracy = class_accuracy(classifier, test.waveforms, test.labels)
        recon_accuracy = class_accuracy(
            classifier, self.reconstruct(model, test.waveforms), test.labels
        )
        return {
            "classifier_test_accuracy": accuracy,
            "reconstruction_class_accuracy": recon_accuracy,
            "intelligibility_ratio": recon_accuracy / max(accuracy, 1e-12),
        }

    def shipped_classifier_metrics(
        self, model: nn.Module, data: Any, classifier_dir: Path
    ) -> dict[str, float]:
        """Intelligibility measured with the classifier stored in ``classifier_dir`` (a shipped
        model's own, so its card's figure does not depend on a retrained classifier)."""
        if data.test.labels is None:
            return {}
        return self.intelligibility(
            model, data.test, LogMelClassifier.from_pretrained(classifier_dir)
        )

    def score_samples(
        self, run, model, samples, labels, data, classifier_dir, seed
    ) -> dict[str, float]:
        """Keep the samples as WAVs (RUN/evaluate_samples/) and spectrograms; the classifier's
        agreement with the class each was drawn for."""
        folder = run.path / "evaluate_samples"
        if folder.exists():
            shutil.rmtree(folder)
        for i, wave in enumerate(samples):
            tag = "unconditional" if labels is None else str(int(labels[i]))
            write_wav(folder / f"sample_{i}_{tag}.wav", wave, model.config.sample_rate)
        classes = int(labels.max()) + 1 if labels is not None else 0
        per_row = classes or 8
        rows = [samples[i : i + per_row] for i in range(0, min(len(samples), 4 * per_row), per_row)]
        plots.plot_spectrograms(
            run.path / "evaluate_samples.png",
            rows,
            [f"samples {i + 1}" for i in range(len(rows))],
            model.config.sample_rate,
            [str(c) for c in range(classes)] if classes else None,
        )
        if labels is None or data.train.labels is None:
            return {}
        classifier, _ = audio_classifier(classifier_dir or run.path / "classifier", data)
        return {"sample_class_accuracy": class_accuracy(classifier, samples, labels.numpy())}


def _note(message: str) -> None:
    """One line on stderr about a measurement ``evaluate`` leaves out."""
    print(f"vqvae evaluate: {message}", file=sys.stderr)
