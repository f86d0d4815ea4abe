"""The pipeline's stages over a run folder: train → reconstruct → encode → train prior → sample
→ evaluate. The CLI is a thin layer over these functions."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae import configs, distributed
from vqvae.data import DataSplits, ImageSet, load_codes, load_data, save_codes
from vqvae.errors import ConfigError, VQVAEError
from vqvae.files import atomic_write_text
from vqvae.metrics import (
    bits_per_dim,
    code_histogram,
    codebook_stats,
    psnr_from_mse,
    ssim,
)
from vqvae.models import VQVAE, build_model, load_model
from vqvae.pipeline import plots
from vqvae.pipeline.codes import (
    cached_codes,
    check_index_range,
    codes_on_every_rank,
    summed_nll_bits,
)
from vqvae.pipeline.fitting import PriorCodes, fit_on_device, fit_prior_on_codes
from vqvae.pipeline.run import RunConfig, RunDir
from vqvae.pipeline.sections import PRIOR_SECTIONS
from vqvae.priors import AutoregressivePrior, load_prior
from vqvae.training import TrainResult, latest_checkpoint, read_log, verify_checkpoint

EVAL_BATCH = 500


# --- data ------------------------------------------------------------------------------------
def _family(kind: str):
    """The stages of a non-image model family (``vqvae.pipeline.audio`` for kind "audio",
    ``vqvae.pipeline.vectors`` for "mlp"), or None for the image families."""
    if kind == "audio":
        from vqvae.pipeline import audio

        return audio
    if kind == "mlp":
        from vqvae.pipeline import vectors

        return vectors
    return None


def load_for_model(spec: str, config: RunConfig) -> DataSplits:
    """Load ``spec`` converted to the model's image size and channel count."""
    if (family := _family(config.model.kind)) is not None:
        return family.load_for_model(spec, config)
    m = config.model
    return load_data(spec, image_size=m.image_size, channels=m.in_channels)


def _fit_model_to_data(
    spec: str, config: RunConfig, raw: dict[str, Any]
) -> tuple[RunConfig, DataSplits]:
    """The model takes the data's size and channels unless the user set them explicitly."""
    from vqvae.data.audio import is_audio_spec

    kind = config.model.kind
    if is_audio_spec(spec):  # audio data selects the audio model
        if "kind" in raw.get("model", {}) and kind != "audio":
            raise ConfigError(f"{spec}: audio data needs model.kind = 'audio', not {kind!r}")
        kind = "audio"
    if (family := _family(kind)) is not None:
        return family.fit_model_to_data(spec, config, raw)
    model_raw = raw.get("model", {})
    data = load_data(
        spec,
        image_size=model_raw.get("image_size"),
        channels=model_raw.get("in_channels"),
    )
    if data.height != data.width:
        raise VQVAEError(f"{spec}: images are {data.height}×{data.width}; square images needed")
    changes: dict[str, Any] = {"in_channels": data.channels, "image_size": data.height}
    if "data_variance" not in model_raw and config.model.recon_loss == "mse":
        changes["data_variance"] = max(float(data.train.images.var()), 1e-6)
    model = configs.replace(config.model, "model", **changes)
    return configs.replace(config, "config", model=model), data


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))


def _labels(part: ImageSet) -> torch.Tensor | None:
    return None if part.labels is None else torch.from_numpy(part.labels.astype(np.int64))


def _training_tensors(config: RunConfig, data) -> tuple[torch.Tensor | None, ...]:
    """What the model's ``training_losses`` reads, for every item of the training split."""
    if (family := _family(config.model.kind)) is not None:
        return family.training_tensors(data)
    return _tensor(data.train.images), _labels(data.train)


# --- stage 1: the VQ-VAE -------------------------------------------------------------------
@dataclass
class TrainSummary:
    run: Path
    result: TrainResult
    metrics: dict[str, float]


def train_vqvae(
    spec: str,
    out: str | Path,
    config: RunConfig,
    raw: dict[str, Any],
    *,
    resume: bool = False,
    show_progress: bool = True,
) -> TrainSummary:
    run = RunDir(out)
    if resume:
        config, spec = _resume_config(run, config, raw)
        data = load_for_model(spec, config)
    else:
        if run.model_dir.exists() or (run.path / "checkpoints").exists():
            raise VQVAEError(
                f"{run.path}: already holds a run; pass --resume or choose a new --out"
            )
        config, data = _fit_model_to_data(spec, config, raw)
    torch.manual_seed(config.train.seed)  # the initial weights are part of a reproducible run
    model = build_model(config.model)  # validates the config before anything is written
    if (prepare := getattr(_family(config.model.kind), "prepare_model", None)) is not None:
        prepare(model, data)  # e.g. a vector model's standardisation (a resume reloads it)
    if resume and (ckpt := latest_checkpoint(run.path / "checkpoints")) is not None:
        verify_checkpoint(ckpt, model)  # a corrupt or foreign checkpoint: refuse, write nothing
    main = distributed.is_main_process()
    distributed.barrier()  # every rank has checked the run before rank 0 writes to it
    if main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config, spec)

    result = fit_on_device(
        model,
        _training_tensors(config, data),
        config.train,
        run_dir=run.path,
        resume=resume,
        desc="vqvae",
        show_progress=show_progress,
    )
    if not main:
        return TrainSummary(run.path, result, {})
    model.save_pretrained(run.model_dir)
    if result.interrupted:  # stop promptly: the checkpoint is saved, --resume continues
        return TrainSummary(run.path, result, {})
    metrics = reconstruction_metrics(model, data.test)
    write_training_pictures(run, model, data)
    return TrainSummary(run.path, result, metrics)


def _resume_config(run: RunDir, config: RunConfig, raw: dict[str, Any]) -> tuple[RunConfig, str]:
    """On resume the saved config rules; only the training budget may change. Settings given
    again with their saved values are fine, so the same command line can be re-run."""
    saved, spec = run.read_config()
    allowed = {("train", "steps"), ("train", "minutes")}
    ignored = PRIOR_SECTIONS
    changed = [
        ".".join(path)
        for path in _leaf_paths(raw)
        if path not in allowed
        and path[0] not in ignored
        and _setting(config, path) != _setting(saved, path)
    ]
    if changed:
        raise ConfigError(f"--resume keeps the run's config; cannot change {', '.join(changed)}")
    budget = {k: v for k, v in configs.to_dict(config.train).items() if k in raw.get("train", {})}
    return configs.replace(
        saved, "config", train=configs.replace(saved.train, "train", **budget)
    ), spec


def _leaf_paths(raw: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The dotted settings a plain mapping sets: {"a": {"b": 1}} -> [("a", "b")]."""
    paths: list[tuple[str, ...]] = []
    for key, value in raw.items():
        if isinstance(value, dict):
            paths += _leaf_paths(value, (*prefix, key))
        else:
            paths.append((*prefix, key))
    return paths


def _setting(config: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path``, or None where the config has no such setting (another kind of
    quantizer, say), which then counts as a change."""
    for key in path:
        config = getattr(config, key, None)
    return config


@torch.no_grad()
def encode_images(model: VQVAE, images: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    model.eval()
    out = [
        model.encode(_tensor(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy()


@torch.no_grad()
def reconstruction_metrics(model: VQVAE, test: ImageSet) -> dict[str, float]:
    """MSE, PSNR (from the mean MSE over the split), mean SSIM and codebook health on ``test``."""
    if (family := _family(model.config.kind)) is not None:  # audio, vectors
        return family.reconstruction_metrics(model, test)
    if not isinstance(model, VQVAE):  # VQ-VAE-2 or Gaussian VAE
        from vqvae.pipeline import generation

        return generation.reconstruction_metrics(model, test)
    model.eval()
    sq_err, ssim_sum, n = 0.0, 0.0, 0
    k, levels = model.quantizer.codebook_size, model.quantizer.index_levels
    counts = torch.zeros(max(1, levels) * k, dtype=torch.float64)  # residual: levels side by side
    for i in range(0, len(test), EVAL_BATCH):
        x = _tensor(test.images[i : i + EVAL_BATCH])
        if model.config.recon_loss == "bce":
            x = (x > 0.5).float()
        idx = model.encode(x)
        x_hat = model.decode_indices(idx).clamp(0, 1)
        sq_err += float((x_hat - x).pow(2).double().sum())
        ssim_sum += float(ssim(x_hat, x).double().sum())
        counts += code_histogram(idx, k, levels)
        n += len(x)
    mse = sq_err / (n * math.prod(test.images.shape[1:]))
    health = codebook_stats(counts, levels=max(1, levels))
    return {"mse": mse, "psnr": psnr_from_mse(mse), "ssim": ssim_sum / n, **health}


def write_training_pictures(run: RunDir, model: VQVAE, data: DataSplits) -> None:
    if (family := _family(model.config.kind)) is not None:  # audio, vectors
        return family.write_training_pictures(run, model, data)
    if not isinstance(model, VQVAE):  # VQ-VAE-2 or Gaussian VAE
        from vqvae.pipeline import generation

        return generation.write_training_pictures(run, model, data)
    originals = data.test.images[:10]
    recon = model.reconstruct(_tensor(originals)).clamp(0, 1).numpy()
    plots.save_image_grid(run.path / "reconstructions.png", [originals, recon])
    idx = encode_images(model, data.test.images)
    levels = model.quantizer.index_levels
    counts = code_histogram(torch.from_numpy(idx), model.quantizer.codebook_size, levels).numpy()
    title = "code usage on the test split" + (f" ({levels} levels side by side)" if levels else "")
    plots.plot_codebook_usage(run.path / "codebook_usage.png", counts, title)
    keys = [
        "train/loss",
        "train/recon",
        "train/commitment",
        "train/psnr",
        "train/perplexity",
        "train/codebook_usage",
    ]
    plots.plot_loss_curves(
        run.path / "loss_curves.png", read_log(run.path / "log.jsonl"), keys, "VQ-VAE"
    )


def reconstruct(run_path: str | Path, spec: str | None, out: str | Path, n: int = 16) -> Path:
    run = RunDir(run_path)
    config, saved_spec = run.read_config()
    if (family := _family(config.model.kind)) is not None:  # audio: a folder of WAVs
        return family.reconstruct(run, config, spec or saved_spec, out, n)
    model = load_model(run.require_model())
    data = load_for_model(spec or saved_spec, config)
    originals = data.test.images[:n]
    recon = model.reconstruct(_tensor(originals)).clamp(0, 1).numpy()
    return plots.save_image_grid(out, [originals, recon])


# --- the index level -------------------------------------------------------------------------
def encode_dataset(
    run_path: str | Path, spec: str | None, out: str | Path, split: str = "train"
) -> Path:
    run = RunDir(run_path)
    config, saved_spec = run.read_config()
    if (family := _family(config.model.kind)) is not None:
        return family.encode_dataset(run, config, spec or saved_spec, out, split)
    model = VQVAE.from_pretrained(run.require_model())
    data = load_for_model(spec or saved_spec, config)
    part = data.train if split == "train" else data.test
    indices = encode_images(model, part.images)
    meta = {"split": split, "data": spec or saved_spec, "grid": list(indices.shape[1:])}
    save_codes(out, indices, part.labels, model.config.quantizer.codebook_size, meta)
    return Path(out)


def decode_codes(
    run_path: str | Path, codes_path: str | Path, out: str | Path, n: int = 16
) -> Path:
    """Decode the first ``n`` index maps of a codes file (``vqvae encode``) to an image grid."""
    run = RunDir(run_path)
    if (family := _family(run.read_config()[0].model.kind)) is not None:
        return family.decode_codes(run, codes_path, out, n)  # audio: a folder of WAVs
    model = VQVAE.from_pretrained(run.require_model())
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    indices = load_codes(codes_path).indices[:n]
    check_index_range(codes_path, indices, model.config.quantizer.codebook_size)
    c, size = model.config.in_channels, model.config.image_size
    expected = tuple(model.encode(torch.zeros(1, c, size, size)).shape[1:])
    if tuple(indices.shape[1:]) != expected:
        raise VQVAEError(
            f"{codes_path}: index maps of shape {tuple(indices.shape[1:])}, the model's are "
            f"{expected}"
        )
    images = model.decode_indices(torch.from_numpy(indices)).clamp(0, 1).numpy()
    return plots.save_image_grid(out, [images])


def _cached_codes(run: RunDir, model: VQVAE, data: DataSplits, split: str):
    """The run's index maps of ``split``, re-encoded when the model is newer than the cache."""
    k = model.config.quantizer.codebook_size
    return cached_codes(run, data, split, lambda part: encode_images(model, part.images), k)


def _codes_on_every_rank(run: RunDir, model: VQVAE, data: DataSplits, split: str):
    """Rank 0 fills the codes cache; the other ranks read what it wrote."""
    return codes_on_every_rank(run, split, lambda: _cached_codes(run, model, data, split))


# --- stage 2: the prior --------------------------------------------------------------------
def train_prior(
    run_path: str | Path,
    spec: str | None,
    overrides: dict[str, Any],
    *,
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, float]:
    run = RunDir(run_path)
    config, saved_spec = run.read_config()
    config = _with_prior_overrides(config, overrides)
    if config.model.kind == "audio":  # a Transformer over code sequences
        from vqvae.pipeline import audio

        return audio.train_prior(
            run, config, spec or saved_spec, resume=resume, show_progress=show_progress
        )
    if config.model.kind == "mlp":
        from vqvae.pipeline import vectors

        raise vectors.no_prior()
    if config.model.kind == "vae":
        raise VQVAEError(f"{run.path}: a Gaussian VAE has no codes, so no prior to train")
    if config.model.kind == "vqvae2":
        from vqvae.pipeline import generation

        data = load_for_model(spec or saved_spec, config)
        return generation.train_hierarchical_priors(
            run, config, spec or saved_spec, data, resume=resume, show_progress=show_progress
        )
    model = VQVAE.from_pretrained(run.require_model())
    if model.quantizer.index_levels:
        raise VQVAEError(
            f"{run.path}: train-prior models one index map per image, but this run's residual "
            f"quantizer gives {model.quantizer.index_levels} (indices (N, L, h, w))"
        )
    data = load_for_model(spec or saved_spec, config)
    codes = PriorCodes.of(
        config, data.train.num_classes, lambda split: _codes_on_every_rank(run, model, data, split)
    )
    from vqvae.pipeline.generation import build_prior, top_section

    torch.manual_seed(config.prior_train.seed)
    config, prior = build_prior(
        config, top_section(config), model.config.quantizer.codebook_size, codes.num_classes
    )
    main = fit_prior_on_codes(
        run, config, spec or saved_spec, prior, codes, resume=resume, show_progress=show_progress
    )
    if not main:
        return {}  # rank 0 measures the prior
    return prior_metrics(prior, codes.test.indices, codes.labels("test"), model.config)


PREVIEW_PER_CLASS = 8


def preview_samples(run_path: str | Path) -> Path | None:
    """After ``train-prior`` on an image run: RUN/samples.png, ``PREVIEW_PER_CLASS`` samples
    (of every class, one row each, for a conditional prior). None for audio runs, whose
    samples are WAV files drawn by ``vqvae sample``."""
    kind = RunDir(run_path).read_config()[0].model.kind
    if kind not in ("vqvae", "vqvae2") or not distributed.is_main_process():
        return None
    return sample(run_path, PREVIEW_PER_CLASS, Path(run_path) / "samples.png")


def _with_prior_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    if not overrides:
        return config
    merged = configs.to_dict(config)
    for section, values in overrides.items():
        if section not in PRIOR_SECTIONS:
            raise ConfigError(
                f"train-prior: cannot change {section!r} (only {', '.join(PRIOR_SECTIONS)})"
            )
        if isinstance(values, dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return configs.from_dict(RunConfig, merged, "config")


@torch.no_grad()
def prior_metrics(
    prior: AutoregressivePrior, indices: np.ndarray, labels: np.ndarray | None, model_config
) -> dict[str, float]:
    """Held-out NLL in bits per code and bits per input dimension."""
    per_code = summed_nll_bits(prior, indices, labels, batch_size=EVAL_BATCH) / indices.size
    codes_per_item = math.prod(indices.shape[1:])
    dims = model_config.in_channels * model_config.image_size**2
    return {
        "prior_nll_bits_per_code": per_code,
        "prior_nll_bits_per_dim": bits_per_dim(per_code, codes_per_item, dims),
        "prior_uniform_bits_per_code": math.log2(prior.config.codebook_size),
    }


def sample(
    run_path: str | Path,
    n: int,
    out: str | Path,
    *,
    label: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    guidance_scale: float | None = None,
    cached: bool = True,
    complete: bool = False,
) -> Path:
    """Draw ``n`` samples (codes from the prior(s), decoded; a VAE decodes N(0, I) draws) and
    save a grid. A conditional prior without ``label`` draws ``n`` samples of every class, one
    row per class. ``complete``: keep the top half of test images' codes, sample the rest."""
    from vqvae.pipeline import generation

    options = generation.SampleOptions(temperature, top_k, top_p, guidance_scale, cached)
    kind = RunDir(run_path).read_config()[0].model.kind
    if kind == "mlp":
        from vqvae.pipeline import vectors

        raise vectors.no_prior()
    if kind == "audio":  # WAVs and spectrograms in the folder ``out``
        from vqvae.pipeline import audio

        if complete:
            raise ConfigError("--complete is for image runs")
        return audio.sample(run_path, n, out, label=label, options=options, seed=seed)
    data = None
    if complete:
        config, saved_spec = RunDir(run_path).read_config()
        data = load_for_model(saved_spec, config)
    return generation.sample_grid(
        run_path, n, out, label=label, options=options, seed=seed, complete=complete, data=data
    )


# --- evaluation ------------------------------------------------------------------------------
def evaluate(
    run_path: str | Path,
    spec: str | None,
    *,
    samples: int = 0,
    classifier_dir: str | Path | None = None,
    sample_options: Any = None,
    seed: int = 0,
) -> dict[str, float]:
    """Measure the run on the test split and write RUN/metrics.json. ``samples`` > 0 also
    measures sample quality (``vqvae.pipeline.quality``) on that many samples."""
    run = RunDir(run_path)
    config, saved_spec = run.read_config()
    if (family := _family(config.model.kind)) is not None:  # audio, vectors
        return family.evaluate(
            run,
            config,
            spec or saved_spec,
            samples=samples,
            classifier_dir=classifier_dir,
            options=sample_options,
            seed=seed,
        )
    model = load_model(run.require_model())
    data = load_for_model(spec or saved_spec, config)
    metrics: dict[str, Any] = reconstruction_metrics(model, data.test)
    if isinstance(model, VQVAE):
        metrics["codebook_size"] = model.config.quantizer.codebook_size
    if hasattr(model, "bits_per_image"):
        metrics["bits_per_image"] = model.bits_per_image
    if isinstance(model, VQVAE) and (run.prior_model_dir / "model.safetensors").is_file():
        prior = load_prior(run.prior_model_dir)
        codes = _cached_codes(run, model, data, "test")
        labels = codes.labels if prior.config.num_classes else None
        metrics.update(prior_metrics(prior, codes.indices, labels, model.config))
    if samples or (config.model.kind == "vqvae2" and run.bottom_prior_model_dir.exists()):
        from vqvae.pipeline import generation, quality

        model, priors = generation.load_run_model(run)
        if isinstance(model, generation.VQVAE2):
            test = generation.hierarchical_codes(run, model, data, "test")
            metrics.update(generation.hierarchical_prior_metrics(model, *priors, test))
        if samples:
            metrics.update(
                quality.sample_quality(
                    run,
                    model,
                    priors,
                    data,
                    samples,
                    classifier_dir=classifier_dir,
                    options=sample_options,
                    seed=seed,
                )
            )
    metrics["data"] = data.spec
    atomic_write_text(run.metrics_file, json.dumps(metrics, indent=2) + "\n")
    return metrics
