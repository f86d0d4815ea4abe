"""Stage two for every model family: which priors a run has, training them, and drawing images.

* VQ-VAE (``model.kind = "vqvae"``): one prior over the code map, a gated PixelCNN or a
  Transformer (``prior_kind``), in RUN/prior/.
* VQ-VAE-2 (``"vqvae2"``): a prior over the top codes (``prior_kind``, RUN/prior/) and a gated
  PixelCNN over the bottom codes conditioned on the top codes (``bottom_prior``,
  RUN/prior_bottom/). Both see the class when the prior is conditional.
* Gaussian VAE (``"vae"``): no prior to train; samples decode z ~ N(0, I).

``generate`` is the one place that turns (model, priors, labels, sampling options) into images;
``vqvae sample`` and the sample-quality metrics both use it.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae import configs
from vqvae.data import DataSplits, ImageSet, load_codes, save_codes
from vqvae.errors import ConfigError, VQVAEError
from vqvae.metrics import codebook_stats, psnr_from_mse, ssim
from vqvae.models import VQVAE, VQVAE2, GaussianVAE
from vqvae.pipeline import plots
from vqvae.pipeline.codes import summed_nll_bits
from vqvae.pipeline.run import RunConfig, RunDir
from vqvae.priors import (
    AutoregressivePrior,
    GatedPixelCNN,
    TransformerPrior,
    load_prior,
)
from vqvae.training import ShuffledBatches, fit, read_log

BATCH = 500  # images per evaluation batch
SAMPLE_BATCH = 250  # maps per sampling call

Model = VQVAE | VQVAE2 | GaussianVAE


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))


# --- building priors -------------------------------------------------------------------------
def top_section(config: RunConfig) -> str:
    """The config section of the (top) prior: ``prior`` (PixelCNN) or ``transformer``."""
    return "transformer" if config.prior_kind == "transformer" else "prior"


def build_prior(
    config: RunConfig,
    section: str,
    codebook_size: int,
    num_classes: int,
    cond_codebook_size: int = 0,
) -> tuple[RunConfig, AutoregressivePrior]:
    """The prior of ``section`` with the sizes only the data and the model know filled in.

    Returns the run config with that section updated (it is saved with the run) and the prior.
    """
    sizes: dict[str, Any] = {"codebook_size": codebook_size, "num_classes": num_classes}
    if section == "bottom_prior":
        sizes["cond_codebook_size"] = cond_codebook_size
    filled = configs.replace(getattr(config, section), section, **sizes)
    prior = TransformerPrior(filled) if section == "transformer" else GatedPixelCNN(filled)
    return configs.replace(config, "config", **{section: filled}), prior


# --- VQ-VAE-2 and VAE: metrics and pictures after stage one -----------------------------------
@torch.no_grad()
def reconstruction_metrics(model: VQVAE2 | GaussianVAE, test: ImageSet) -> dict[str, float]:
    """MSE, PSNR, SSIM on ``test``; for VQ-VAE-2 also both codebooks' health."""
    model.eval()
    sq_err, ssim_sum, n = 0.0, 0.0, 0
    hier = isinstance(model, VQVAE2)
    if hier:
        top_counts = torch.zeros(model.top_quantizer.codebook_size, dtype=torch.float64)
        counts = torch.zeros(model.quantizer.codebook_size, dtype=torch.float64)
    for i in range(0, len(test), BATCH):
        x = _tensor(test.images[i : i + BATCH])
        if model.config.recon_loss == "bce":
            x = (x > 0.5).float()
        if hier:
            top, bottom = model.encode(x)
            x_hat = model.decode_indices(top, bottom).clamp(0, 1)
            top_counts += torch.bincount(top.flatten(), minlength=top_counts.numel()).double()
            counts += torch.bincount(bottom.flatten(), minlength=counts.numel()).double()
        else:
            x_hat = model.reconstruct(x).clamp(0, 1)
        sq_err += float((x_hat - x).pow(2).double().sum())
        ssim_sum += float(ssim(x_hat, x).double().sum())
        n += len(x)
    mse = sq_err / (n * math.prod(test.images.shape[1:]))
    metrics: dict[str, float] = {"mse": mse, "psnr": psnr_from_mse(mse), "ssim": ssim_sum / n}
    if hier:
        metrics.update(codebook_stats(counts))
        metrics.update({f"top_{k}": v for k, v in codebook_stats(top_counts).items()})
    return metrics


def write_training_pictures(run: RunDir, model: VQVAE2 | GaussianVAE, data: DataSplits) -> None:
    originals = data.test.images[:10]
    recon = model.reconstruct(_tensor(originals)).clamp(0, 1).numpy()
    plots.save_image_grid(run.path / "reconstructions.png", [originals, recon])
    keys = ["train/loss", "train/recon", "train/psnr", "train/kl", "train/perplexity"]
    keys += ["train/top_perplexity", "train/codebook_usage"]
    title = "VQ-VAE-2" if isinstance(model, VQVAE2) else "Gaussian VAE"
    plots.plot_loss_curves(
        run.path / "loss_curves.png", read_log(run.path / "log.jsonl"), keys, title
    )


# --- VQ-VAE-2: codes of both levels, and training both priors ---------------------------------
@dataclass
class LevelCodes:
    top: np.ndarray  # (N, ht, wt) int64
    bottom: np.ndarray  # (N, hb, wb) int64
    labels: np.ndarray | None


def hierarchical_codes(run: RunDir, model: VQVAE2, data: DataSplits, split: str) -> LevelCodes:
    """Both levels' codes of ``split``, cached in RUN/codes/ and re-encoded when stale."""
    part = getattr(data, split)
    weights = run.model_dir / "model.safetensors"
    paths = {lvl: run.codes_dir / f"{split}-{lvl}.safetensors" for lvl in ("top", "bottom")}
    fresh = all(
        p.is_file() and p.stat().st_mtime >= weights.stat().st_mtime for p in paths.values()
    )
    if fresh:
        loaded = {lvl: load_codes(p) for lvl, p in paths.items()}
        if all(c.meta.get("data") == data.spec and len(c) == len(part) for c in loaded.values()):
            return LevelCodes(loaded["top"].indices, loaded["bottom"].indices, part.labels)
    model.eval()
    tops, bottoms = [], []
    for i in range(0, len(part), BATCH):
        top, bottom = model.encode(_tensor(part.images[i : i + BATCH]))
        tops.append(top)
        bottoms.append(bottom)
    codes = LevelCodes(torch.cat(tops).numpy(), torch.cat(bottoms).numpy(), part.labels)
    meta = {"split": split, "data": data.spec}
    save_codes(paths["top"], codes.top, part.labels, model.top_quantizer.codebook_size, meta)
    save_codes(paths["bottom"], codes.bottom, part.labels, model.quantizer.codebook_size, meta)
    return codes


def train_hierarchical_priors(
    run: RunDir,
    config: RunConfig,
    spec: str,
    data: DataSplits,
    *,
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, float]:
    """Train the top prior and the bottom prior (conditioned on the top codes) of a VQ-VAE-2."""
    model = VQVAE2.from_pretrained(run.require_model())
    train = hierarchical_codes(run, model, data, "train")
    test = hierarchical_codes(run, model, data, "test")
    conditional = config.conditional_prior and train.labels is not None
    num_classes = int(data.train.num_classes or 0) if conditional else 0
    labels = torch.from_numpy(train.labels) if conditional else None
    k_top = model.top_quantizer.codebook_size
    torch.manual_seed(config.prior_train.seed)
    config, top_prior = build_prior(config, top_section(config), k_top, num_classes)
    config, bottom_prior = build_prior(
        config, "bottom_prior", model.quantizer.codebook_size, num_classes, k_top
    )
    levels = [
        (top_prior, run.prior_dir, (torch.from_numpy(train.top), labels), "top prior"),
        (
            bottom_prior,
            run.bottom_prior_dir,
            (torch.from_numpy(train.bottom), labels, torch.from_numpy(train.top)),
            "bottom prior",
        ),
    ]
    for prior, directory, tensors, desc in levels:
        if not resume and directory.exists():
            shutil.rmtree(directory)  # a new prior replaces the old one
        batches = ShuffledBatches(tensors, config.prior_train.batch_size, config.prior_train.seed)
        fit(
            prior,
            batches,
            config.prior_train,
            run_dir=directory,
            resume=resume,
            desc=desc,
            show_progress=show_progress,
        )
        prior.save_pretrained(directory / "model")
    run.write_config(config, spec)
    return hierarchical_prior_metrics(model, top_prior, bottom_prior, test)


def hierarchical_prior_metrics(
    model: VQVAE2, top_prior, bottom_prior, test: LevelCodes
) -> dict[str, float]:
    """Held-out NLL of each level (bits per code) and of the whole image (bits per dim):
    -log p(top) - log p(bottom | top)."""
    labels = test.labels if top_prior.config.num_classes else None
    top_bits = summed_nll_bits(top_prior, test.top, labels, batch_size=BATCH)
    bottom_bits = summed_nll_bits(bottom_prior, test.bottom, labels, test.top, batch_size=BATCH)
    n = len(test.top)
    dims = model.config.in_channels * model.config.image_size**2
    return {
        "prior_top_nll_bits_per_code": top_bits / test.top.size,
        "prior_bottom_nll_bits_per_code": bottom_bits / test.bottom.size,
        "prior_nll_bits_per_code": (top_bits + bottom_bits) / (test.top.size + test.bottom.size),
        "prior_nll_bits_per_dim": (top_bits + bottom_bits) / (n * dims),
    }


# --- drawing images ------------------------------------------------------------------------
@dataclass
class SampleOptions:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    guidance_scale: float | None = None
    cached: bool = True

    def kwargs(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "guidance_scale": self.guidance_scale,
            "cached": self.cached,
        }


def load_run_model(run: RunDir) -> tuple[Model, list[AutoregressivePrior]]:
    """The run's model and its trained priors ([] for a VAE, [top, bottom] for VQ-VAE-2)."""
    from vqvae.models import load_model

    model = load_model(run.require_model()).eval()
    if isinstance(model, GaussianVAE):
        return model, []
    priors = [load_prior(run.require_prior())]
    if isinstance(model, VQVAE2):
        if not (run.bottom_prior_model_dir / "model.safetensors").is_file():
            raise VQVAEError(f"{run.path}: no bottom prior; run `vqvae train-prior` first")
        priors.append(load_prior(run.bottom_prior_model_dir))
    return model, priors


def num_classes(priors: list[AutoregressivePrior]) -> int:
    return priors[0].config.num_classes if priors else 0


@torch.no_grad()
def generate(
    model: Model,
    priors: list[AutoregressivePrior],
    n: int,
    labels: torch.Tensor | None,
    options: SampleOptions,
    generator: torch.Generator,
    prefix: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """n images (n, C, H, W) in [0, 1]: codes drawn from the priors, decoded (or a VAE's draw).

    ``prefix``: codes kept fixed (one tensor per level, (n, rows, w) whole rows) — completion.
    """
    out = []
    for i in range(0, n, SAMPLE_BATCH):
        m = min(SAMPLE_BATCH, n - i)
        lab = None if labels is None else labels[i : i + m]
        pre = None if prefix is None else [p[i : i + m] for p in prefix]
        if isinstance(model, GaussianVAE):
            if lab is not None or pre is not None:
                raise ConfigError("a Gaussian VAE draws unconditional samples only")
            images = model.sample(m, generator)
        elif isinstance(model, VQVAE2):
            top_prior, bottom_prior = priors
            top = top_prior.sample(
                m,
                model.config.top_grid,
                lab,
                prefix=None if pre is None else pre[0],
                generator=generator,
                **options.kwargs(),
            )
            bottom = bottom_prior.sample(
                m,
                model.config.grid,
                lab,
                prefix=None if pre is None else pre[1],
                cond=top,
                generator=generator,
                **options.kwargs(),
            )
            images = model.decode_indices(top, bottom)
        else:
            codes = priors[0].sample(
                m,
                model.config.grid,
                lab,
                prefix=None if pre is None else pre[0],
                generator=generator,
                **options.kwargs(),
            )
            images = model.decode_indices(codes)
        out.append(images.clamp(0, 1))
    return torch.cat(out) if out else torch.zeros(0)


def sample_grid(
    run_path: str | Path,
    n: int,
    out: str | Path,
    *,
    label: int | None = None,
    options: SampleOptions | None = None,
    seed: int = 0,
    complete: bool = False,
    data: DataSplits | None = None,
) -> Path:
    """Draw samples and save them as a grid: one row per class for a conditional prior without
    ``label``. ``complete``: keep the top half of the codes of n test images (from ``data``),
    sample the rest; rows = originals, reconstructions, completions."""
    run = RunDir(run_path)
    options = options or SampleOptions()
    model, priors = load_run_model(run)
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    classes = num_classes(priors)
    if label is not None and not classes:
        raise ConfigError("--label given but the prior is unconditional")
    if label is not None and not 0 <= label < classes:
        raise ConfigError(f"--label must be in [0, {classes}), got {label}")
    g = torch.Generator().manual_seed(seed)
    if complete:
        return _completion_grid(model, priors, n, out, options, g, data)
    if label is not None:
        rows = [torch.full((n,), label)]
    elif classes and priors[0].null_label is None:
        rows = [torch.full((n,), c) for c in range(classes)]
    elif classes:  # a null class too: every class, then unconditional samples (no guidance)
        rows = [torch.full((n,), c) for c in range(classes)]
        rows += [None] if options.guidance_scale is None else []
    else:
        rows = [None]
    images = [generate(model, priors, n, lab, options, g).numpy() for lab in rows]
    return plots.save_image_grid(out, images)


def _completion_grid(model, priors, n, out, options, g, data: DataSplits | None) -> Path:
    if isinstance(model, GaussianVAE):
        raise ConfigError("--complete needs a VQ-VAE or VQ-VAE-2 (a code map to complete)")
    if data is None:
        raise ConfigError("--complete needs data")
    x = _tensor(data.test.images[:n])
    n = len(x)
    codes = model.encode(x)
    levels = codes if isinstance(codes, tuple) else (codes,)
    prefix = tuple(c[:, : c.shape[1] // 2] for c in levels)  # the top half of each map's rows
    labels = None
    if num_classes(priors) and data.test.labels is not None:
        labels = torch.from_numpy(data.test.labels[:n].astype(np.int64))
    recon = model.decode_indices(*levels).clamp(0, 1)
    completions = [
        generate(model, priors, n, labels, options, g, prefix=prefix).numpy() for _ in range(3)
    ]
    return plots.save_image_grid(out, [x.numpy(), recon.numpy(), *completions])
