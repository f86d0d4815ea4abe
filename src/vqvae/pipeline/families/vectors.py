"""The plain-vector family (``model.kind = "mlp"``, data ``npz:FILE`` or ``npy:FILE`` holding
(N, F) arrays): an MLP VQ-VAE that gives each vector M codes. No prior: its code tuples are
for lookup and analysis, not for generation.

Measured (test split): ``mse`` in data units and ``normalized_mse`` (per-feature MSE /
variance, averaged), codebook health, ``bits_per_vector`` = M·log2 K, and with labels a
bag-of-codes probe (``probe_label_accuracy`` against ``probe_label_chance``) and
``code_label_nmi``, the normalised mutual information between the code tuples and the labels
(1 = the codes are the classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vqvae import configs
from vqvae.data.vectors import load_vectors
from vqvae.errors import ConfigError, VQVAEError
from vqvae.evaluation import probe_scores
from vqvae.evaluation.probes import code_label_nmi
from vqvae.files import atomic_path
from vqvae.pipeline.families.base import ModelFamily, register_family


@register_family
class VectorFamily(ModelFamily):
    kind = "mlp"
    title = "vector VQ-VAE"
    loss_keys = ("train/loss", "train/recon", "train/commitment", "train/perplexity")
    batch = 4096

    def load_data(self, spec: str, model_config: Any) -> Any:
        data = load_vectors(spec)
        if model_config.input_dim is not None and data.features != model_config.input_dim:
            raise ConfigError(
                f"model.input_dim = {model_config.input_dim} but {spec} holds vectors of "
                f"{data.features} features"
            )
        return data

    def fit_config(self, spec, config):
        data = self.load_data(spec, config.model)
        model = configs.replace(config.model, "model", input_dim=data.features)
        return configs.replace(config, "config", model=model), data

    def build(self, config, data) -> nn.Module:
        """Standardised with the training split's statistics (saved with the weights)."""
        model = super().build(config, data)
        model.set_normalization(data.train.vectors)
        return model

    def inputs(self, part: Any, model: nn.Module | None = None) -> np.ndarray:
        return part.vectors

    def training_tensors(self, data: Any) -> tuple[torch.Tensor]:
        return (torch.from_numpy(data.train.vectors),)

    def code_grid(self, model: nn.Module) -> tuple[int, ...]:
        return (model.config.codes,)

    def fidelity(self, model, part, outputs) -> dict[str, float]:
        err = (outputs.astype(np.float64) - part.vectors) ** 2
        variance = np.maximum(part.vectors.astype(np.float64).var(0), 1e-12)
        return {"mse": float(err.mean()), "normalized_mse": float((err.mean(0) / variance).mean())}

    def rates(self, model: nn.Module) -> dict[str, float]:
        return {"bits_per_vector": model.bits_per_vector}

    def prior_levels(self, run, model):
        raise VQVAEError(
            f"model.kind = {self.kind!r}: train-prior and sample are for image and audio runs; "
            "encode, decode and evaluate work on vector runs"
        )

    def write_examples(self, run, model, data) -> None:
        pass  # vectors have no picture; codebook_usage.png and loss_curves.png still follow

    def save_outputs(self, model: nn.Module, out: str | Path, rows: dict[str, np.ndarray]) -> Path:
        """One row as ``.npy``; several as ``.npz`` with the rows' names as keys."""
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            if len(rows) == 1:
                np.save(f, next(iter(rows.values())))
            else:
                np.savez(f, **rows)
        return Path(out)

    def extra_metrics(self, run, model, data, classifier_dir) -> dict[str, Any]:
        """A bag-of-codes probe of the labels, and the codes' mutual information with them."""
        if data.train.labels is None or len(np.unique(data.train.labels)) < 2:
            return {}
        (train,), (test,) = (self.encode(model, part.vectors) for part in (data.train, data.test))
        targets = {"label": (data.train.labels, data.test.labels)}
        scores = probe_scores(train, test, model.quantizer.codebook_size, targets)
        return {**scores, "code_label_nmi": code_label_nmi(test, data.test.labels)}
