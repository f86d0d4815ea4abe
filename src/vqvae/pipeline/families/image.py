"""The image families: the VQ-VAE (``model.kind = "vqvae"``), VQ-VAE-2 (``"vqvae2"``: a top
and a bottom code map, the bottom prior conditioned on the top codes) and the Gaussian VAE
baseline (``"vae"``: no codes; samples decode z ~ N(0, I)).

Measured on the test split: ``mse``, ``psnr`` (from the mean MSE, pixel range 1), ``ssim``
(mean over images), codebook health of each code map, ``bits_per_image``; with a prior its
held-out NLL per code and per dimension; with ``--samples`` the classifier scores of
``vqvae.evaluation.scores``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vqvae import configs
from vqvae.data import load_data
from vqvae.errors import ConfigError, VQVAEError
from vqvae.evaluation import image_classifier, image_sample_scores
from vqvae.metrics import psnr_from_mse, ssim
from vqvae.models.image_config import fitted_hidden
from vqvae.pipeline import plots
from vqvae.pipeline.families.base import CodeLevel, ModelFamily, register_family
from vqvae.training import as_float


@register_family
class ImageFamily(ModelFamily):
    kind = "vqvae"
    title = "VQ-VAE"
    loss_keys = (
        "train/loss",
        "train/recon",
        "train/commitment",
        "train/psnr",
        "train/perplexity",
        "train/codebook_usage",
    )
    min_samples = 2  # a covariance needs two samples
    can_complete = True
    previews = True

    def load_data(self, spec: str, model_config: Any) -> Any:
        m = model_config
        return load_data(spec, image_size=m.image_size, channels=m.in_channels)

    def fit_config(self, spec, config):
        """The images' channels and side, the network's width (``fitted_hidden``) and (for
        MSE) their variance, unless set."""
        data = self.load_data(spec, config.model)
        if data.height != data.width:
            raise VQVAEError(f"{spec}: images are {data.height}×{data.width}; square images needed")
        m = config.model
        changes: dict[str, Any] = {"in_channels": data.channels, "image_size": data.height}
        if m.hidden is None:
            values = data.channels * data.height * data.width
            changes["hidden"] = fitted_hidden(len(data.train.images), values)
        if m.data_variance is None:
            mse = m.recon_loss == "mse"
            changes["data_variance"] = max(float(data.train.images.var()), 1e-6) if mse else 1.0
        model = configs.replace(m, "model", **changes)
        return configs.replace(config, "config", model=model), data

    def inputs(self, part: Any, model: nn.Module | None = None) -> np.ndarray:
        """The images; binarised at 0.5 for a model trained with BCE (what it reconstructs)."""
        if model is not None and model.config.recon_loss == "bce":
            return (part.images > 0.5).astype(np.float32)
        return part.images

    def code_grid(self, model: nn.Module) -> tuple[int, ...]:
        return tuple(model.config.grid)

    def finish(self, decoded: Tensor) -> Tensor:
        return decoded.clamp(0, 1)

    def fidelity(self, model, part, outputs) -> dict[str, float]:
        x = self.inputs(part, model)
        sq_err, ssim_sum = 0.0, 0.0
        for i in range(0, len(x), self.batch):
            ref, est = as_float(x[i : i + self.batch]), as_float(outputs[i : i + self.batch])
            sq_err += float((est - ref).pow(2).double().sum())
            ssim_sum += float(ssim(est, ref).double().sum())
        mse = sq_err / x.size
        return {"mse": mse, "psnr": psnr_from_mse(mse), "ssim": ssim_sum / len(x)}

    def rates(self, model: nn.Module) -> dict[str, float]:
        return {"bits_per_image": model.bits_per_image} if hasattr(model, "bits_per_image") else {}

    def item_sizes(self, model: nn.Module) -> dict[str, float]:
        c = model.config
        return {"dim": c.in_channels * c.image_size**2}

    def save_outputs(self, model: nn.Module, out: str | Path, rows: dict[str, np.ndarray]) -> Path:
        return plots.save_image_grid(out, list(rows.values()))

    def score_samples(
        self, run, model, samples, labels, data, classifier_dir, seed
    ) -> dict[str, float]:
        classifier, accuracy = image_classifier(classifier_dir or run.path / "classifier", data)
        scores = image_sample_scores(classifier, as_float(samples), labels, data, seed)
        per_row = int(labels.max()) + 1 if labels is not None else 10
        shown = samples[: per_row * 10]
        rows = [shown[i : i + per_row] for i in range(0, len(shown), per_row)]
        plots.save_image_grid(run.path / "evaluate_samples.png", rows)
        return {**scores, "classifier_test_accuracy": accuracy}


@register_family
class HierarchicalFamily(ImageFamily):
    kind = "vqvae2"
    title = "VQ-VAE-2"
    loss_keys = (
        "train/loss",
        "train/recon",
        "train/psnr",
        "train/perplexity",
        "train/top_perplexity",
        "train/codebook_usage",
    )

    def code_levels(self, model: nn.Module) -> list[CodeLevel]:
        c = model.config
        return [
            CodeLevel("top", model.top_quantizer.codebook_size, tuple(c.top_grid)),
            CodeLevel(
                "bottom",
                model.quantizer.codebook_size,
                tuple(c.grid),
                section="bottom_prior",
                conditioned_on=0,
            ),
        ]


@register_family
class GaussianVAEFamily(ImageFamily):
    kind = "vae"
    title = "Gaussian VAE"
    loss_keys = ("train/loss", "train/recon", "train/psnr", "train/kl")
    can_complete = False

    def code_levels(self, model: nn.Module) -> list[CodeLevel]:
        return []

    @torch.no_grad()
    def reconstruct(self, model: nn.Module, inputs: np.ndarray) -> np.ndarray:
        model.eval()
        out = [
            self.finish(model.reconstruct(as_float(inputs[i : i + self.batch])))
            for i in range(0, len(inputs), self.batch)
        ]
        return torch.cat(out).numpy()

    @torch.no_grad()
    def generate(self, model, priors, n, labels, options, generator, prefix=None) -> np.ndarray:
        """Decoded draws z ~ N(0, I): unconditional only."""
        if labels is not None or prefix is not None:
            raise ConfigError("a Gaussian VAE draws unconditional samples only")
        out = [
            self.finish(model.sample(min(self.sample_batch, n - i), generator))
            for i in range(0, n, self.sample_batch)
        ]
        return torch.cat(out).numpy()
