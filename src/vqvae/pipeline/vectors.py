"""The pipeline's stages for plain-vector runs (``model.kind = "mlp"``, data ``npz:FILE`` or
``npy:FILE`` holding (N, F) arrays). ``vqvae.pipeline.stages`` hands these runs to this module.

Measured (test split): ``mse`` in data units and ``normalized_mse`` (per-feature MSE / variance,
averaged), codebook health, ``bits_per_vector`` = M·log2 K, and with labels a bag-of-codes probe
(``probe_label_accuracy`` against ``probe_label_chance``) and ``code_label_nmi``, the normalised
mutual information between the code tuples and the labels (1 = the codes are the classes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae import configs
from vqvae.data import load_codes, save_codes
from vqvae.data.vectors import VectorSet, VectorSplits, load_vectors
from vqvae.errors import ConfigError, VQVAEError
from vqvae.files import atomic_path, atomic_write_text
from vqvae.metrics import codebook_stats
from vqvae.metrics.codebook import code_histogram
from vqvae.metrics.probes import chance_accuracy, code_bag, code_label_nmi, probe_accuracy
from vqvae.models.vectors import VectorVQVAE
from vqvae.pipeline import plots
from vqvae.pipeline.codes import check_index_range
from vqvae.pipeline.run import RunConfig, RunDir
from vqvae.training import read_log

BATCH = 4096


def load_for_model(spec: str, config: RunConfig) -> VectorSplits:
    data = load_vectors(spec)
    if data.features != config.model.input_dim:
        raise VQVAEError(
            f"{spec}: vectors have {data.features} features, the model takes "
            f"{config.model.input_dim}"
        )
    return data


def fit_model_to_data(
    spec: str, config: RunConfig, raw: dict[str, Any]
) -> tuple[RunConfig, VectorSplits]:
    """The model takes the data's feature count (an explicit, different model.input_dim is an
    error)."""
    data = load_vectors(spec)
    explicit = raw.get("model", {}).get("input_dim")
    if explicit is not None and explicit != data.features:
        raise ConfigError(
            f"model.input_dim = {explicit} but {spec} holds vectors of {data.features} features"
        )
    model = configs.replace(config.model, "model", input_dim=data.features)
    return configs.replace(config, "config", model=model), data


def training_tensors(data: VectorSplits) -> tuple[torch.Tensor]:
    return (torch.from_numpy(data.train.vectors),)


def prepare_model(model: VectorVQVAE, data: VectorSplits) -> None:
    """Standardise with the training split's statistics (saved with the weights)."""
    model.set_normalization(data.train.vectors)


@torch.no_grad()
def encode_vectors(model: VectorVQVAE, vectors: np.ndarray) -> np.ndarray:
    model.eval()
    out = [
        model.encode(torch.from_numpy(vectors[i : i + BATCH]))
        for i in range(0, len(vectors), BATCH)
    ]
    return torch.cat(out).numpy()


@torch.no_grad()
def reconstruction_metrics(model: VectorVQVAE, test: VectorSet) -> dict[str, float]:
    codes = encode_vectors(model, test.vectors)
    recon = model.decode_indices(torch.from_numpy(codes)).numpy()
    err = (recon.astype(np.float64) - test.vectors) ** 2
    variance = np.maximum(test.vectors.astype(np.float64).var(0), 1e-12)
    levels = model.quantizer.index_levels
    counts = code_histogram(torch.from_numpy(codes), model.quantizer.codebook_size, levels)
    return {
        "mse": float(err.mean()),
        "normalized_mse": float((err.mean(0) / variance).mean()),
        "bits_per_vector": model.bits_per_vector,
        "codebook_size": model.quantizer.codebook_size,
        **codebook_stats(counts, max(1, levels)),
    }


def write_training_pictures(run: RunDir, model: VectorVQVAE, data: VectorSplits) -> None:
    codes = encode_vectors(model, data.test.vectors)
    levels = model.quantizer.index_levels
    counts = code_histogram(torch.from_numpy(codes), model.quantizer.codebook_size, levels)
    plots.plot_codebook_usage(
        run.path / "codebook_usage.png", counts.numpy(), "code usage on the test split"
    )
    keys = ["train/loss", "train/recon", "train/commitment", "train/perplexity"]
    plots.plot_loss_curves(
        run.path / "loss_curves.png", read_log(run.path / "log.jsonl"), keys, "vector VQ-VAE"
    )


def encode_dataset(
    run: RunDir, config: RunConfig, spec: str, out: str | Path, split: str = "train"
) -> Path:
    model = VectorVQVAE.from_pretrained(run.require_model())
    data = load_for_model(spec, config)
    part = data.train if split == "train" else data.test
    meta = {"split": split, "data": spec}
    save_codes(
        out, encode_vectors(model, part.vectors), part.labels, model.quantizer.codebook_size, meta
    )
    return Path(out)


def decode_codes(run: RunDir, codes_path: str | Path, out: str | Path, n: int) -> Path:
    """Decode the first ``n`` code tuples of a codes file to vectors, saved as ``.npy``."""
    model = VectorVQVAE.from_pretrained(run.require_model()).eval()
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    indices = load_codes(codes_path).indices[:n]
    check_index_range(codes_path, indices, model.quantizer.codebook_size)
    try:
        vectors = model.decode_indices(torch.from_numpy(indices)).numpy()
    except ValueError as e:
        raise VQVAEError(f"{codes_path}: {e}") from None
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.save(f, vectors)
    return Path(out)


def evaluate(run: RunDir, config: RunConfig, spec: str, **_: Any) -> dict[str, Any]:
    model = VectorVQVAE.from_pretrained(run.require_model()).eval()
    data = load_for_model(spec, config)
    metrics: dict[str, Any] = reconstruction_metrics(model, data.test)
    if data.train.labels is not None and len(np.unique(data.train.labels)) > 1:
        k = model.quantizer.codebook_size
        train_codes = encode_vectors(model, data.train.vectors)
        test_codes = encode_vectors(model, data.test.vectors)
        metrics["probe_label_accuracy"] = probe_accuracy(
            code_bag(train_codes, k), data.train.labels, code_bag(test_codes, k), data.test.labels
        )
        metrics["probe_label_chance"] = chance_accuracy(data.train.labels, data.test.labels)
        metrics["code_label_nmi"] = code_label_nmi(test_codes, data.test.labels)
    metrics["data"] = data.spec
    atomic_write_text(run.metrics_file, json.dumps(metrics, indent=2) + "\n")
    return metrics


def no_prior(kind: str = "mlp") -> VQVAEError:
    return VQVAEError(
        f"model.kind = {kind!r}: train-prior and sample are for image and audio runs; encode, "
        "decode and evaluate work on vector runs"
    )


def reconstruct(run: RunDir, config: RunConfig, spec: str, out: str | Path, n: int = 16) -> Path:
    """Save ``n`` test vectors and their reconstructions as ``.npz`` (originals,
    reconstructions, codes)."""
    model = VectorVQVAE.from_pretrained(run.require_model()).eval()
    data = load_for_model(spec, config)
    originals = data.test.vectors[:n]
    codes = encode_vectors(model, originals)
    recon = model.decode_indices(torch.from_numpy(codes)).numpy()
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, originals=originals, reconstructions=recon, codes=codes)
    return Path(out)
