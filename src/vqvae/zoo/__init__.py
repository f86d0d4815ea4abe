"""Shipped models by name: VQ-VAEs with their priors, trained by the project's own shipped
configs and commands, stored inside the package and loaded offline.

    src/vqvae/zoo/models/NAME/
        config.json      the run's configuration and data spec (as ``vqvae train`` wrote it)
        model/           the VQ-VAE: config.json + model.safetensors
        prior/           the prior (VQ-VAE-2: prior_bottom/ too): model/config.json + .safetensors
        classifier/      audio only: the log-mel digit classifier the card's intelligibility was
                         measured with (float32), so a fresh load reproduces that figure exactly
                         instead of depending on a classifier retrained on another machine
        card.json        the model card: data, config, the commands that reproduce the model,
                         test metrics measured on the stored weights (and on the fp32 weights
                         before storage), how it is stored, and the SHA-256 and size of every
                         file above
        README.md        the same card for people, written from card.json

Each folder is a run folder reduced to what inference needs, so every stage that reads a run
reads it (``vqvae sample --pretrained NAME``…). The registry is the folders themselves: adding
a model is a data-only change (train it with the shipped commands, then
``python -m vqvae.zoo.package RUN --name NAME ...`` writes its folder; commit the folder).
Every file a card lists is checked against its SHA-256 before anything is loaded, and a file
the card does not list is refused, so a damaged or altered model is an error naming the file.

**Storage.** Weights are safetensors (no pickle) with the layers' weights in float16 and the
quantizers' tensors (codebook, EMA statistics) in float32: half the bytes, so four datasets'
models and priors fit the package's 25 MB budget, while the nearest-code search still sees the
trained codes exactly. Loading casts everything to float32. Each card records the metrics of
the stored model and of the fp32 weights it came from (the difference is what storage costs),
and ``tolerances``: how closely a fresh load must reproduce them (``tests/zoo``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vqvae.errors import CheckpointError, ConfigError

ZOO = Path(__file__).parent / "models"
CARD = "card.json"
README = "README.md"
CLASSIFIER = "classifier"  # an audio model's digit classifier: its card's intelligibility
BUDGET_BYTES = 25 * 1000 * 1000  # every shipped model and prior together


def names(root: Path | None = None) -> list[str]:
    """The shipped models' names (the folders holding a card), sorted."""
    root = ZOO if root is None else root
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CARD).is_file())


def folder(name: str, root: Path | None = None) -> Path:
    """The folder of shipped model ``name``; an unknown name is an error listing the known."""
    root = ZOO if root is None else root
    if name not in names(root):
        known = ", ".join(names(root)) or "none"
        raise ConfigError(f"--pretrained {name!r}: no such shipped model (shipped: {known})")
    return root / name


def read_card(path: Path) -> dict[str, Any]:
    """A model folder's card (``card.json``)."""
    card_path = path / CARD
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{card_path}: unreadable model card ({e})") from None
    if not isinstance(card, dict) or not isinstance(card.get("files"), dict):
        raise CheckpointError(f"{card_path}: a model card needs a 'files' table of checksums")
    return card


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path) -> dict[str, Any]:
    """Check every file of a model folder against its card: present, of the listed size and
    SHA-256, and no other file besides the card and README. Returns the card."""
    card = read_card(path)
    listed = card["files"]
    for rel, entry in listed.items():
        file = path / rel
        if not file.is_file():
            raise CheckpointError(f"{file}: missing (listed in {path / CARD})")
        if file.stat().st_size != entry.get("bytes") or sha256(file) != entry.get("sha256"):
            raise CheckpointError(
                f"{file}: checksum mismatch with {path / CARD}; the shipped model is damaged or "
                "was changed (reinstall vqvae)"
            )
    present = {
        str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != README
    }
    unlisted = sorted(present - set(listed) - {CARD})
    if unlisted:
        raise CheckpointError(f"{path / unlisted[0]}: not listed in {path / CARD}")
    return card


def pretrained_run(name: str, root: Path | None = None) -> Path:
    """The verified folder of shipped model ``name``: a run folder for the pipeline's stages
    (what ``--pretrained NAME`` passes to ``sample``, ``reconstruct``, ``encode``…)."""
    path = folder(name, root)
    verify(path)
    return path


@dataclass
class PretrainedModel:
    """A shipped model, loaded: the VQ-VAE in ``model`` (``encode``, ``decode_indices``),
    its ``priors`` (one per code level), the ``card`` and the run ``config``."""

    name: str
    path: Path
    card: dict[str, Any]
    config: Any  # RunConfig
    family: Any  # the ModelFamily of model.kind
    model: nn.Module
    priors: list[nn.Module]

    def encode(self, inputs: np.ndarray | torch.Tensor) -> np.ndarray | list[np.ndarray]:
        """Items (images (N, C, H, W) in [0, 1], clips (N, C, T)) -> code indices: one array,
        or one per code level for a model with several (VQ-VAE-2: top, bottom)."""
        codes = self.family.encode(self.model, _array(inputs))
        return codes[0] if len(codes) == 1 else codes

    def decode(self, indices: np.ndarray | torch.Tensor | list) -> np.ndarray:
        """Code indices (as ``encode`` returns them) -> items (images clamped to [0, 1])."""
        levels = indices if isinstance(indices, list) else [indices]
        return self.family.decode(self.model, [_array(c).astype(np.int64) for c in levels])

    def reconstruct(self, inputs: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.decode(self.encode(inputs))

    def sample(
        self,
        n: int,
        label: int | None = None,
        *,
        temperature: float = 1.0,
        guidance_scale: float | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """``n`` new items: codes drawn from the prior (of class ``label`` for a conditional
        prior), decoded."""
        from vqvae.pipeline.families import SampleOptions

        if not self.priors:
            raise ConfigError(f"{self.name}: ships without a prior")
        labels = None if label is None else torch.full((n,), label)
        options = SampleOptions(temperature=temperature, guidance_scale=guidance_scale)
        generator = torch.Generator().manual_seed(seed)
        return self.family.generate(self.model, self.priors, n, labels, options, generator)


def pretrained(name: str, root: Path | None = None) -> PretrainedModel:
    """Load shipped model ``name`` after checking its files' checksums (no network)."""
    return load_folder(pretrained_run(name, root), name)


def load_folder(path: Path, name: str | None = None) -> PretrainedModel:
    """A model folder (shipped, or one being packaged) as a ``PretrainedModel``."""
    from vqvae.pipeline.run import RunDir
    from vqvae.pipeline.stages import family_of

    run = RunDir(path)
    config, _ = run.read_config()
    family = family_of(config)
    model = family.load_model(run)
    priors = family.load_priors(run, model) if family.has_priors(run, model) else []
    card = read_card(path) if (path / CARD).is_file() else {}
    return PretrainedModel(name or path.name, path, card, config, family, model, priors)


def measure(loaded: PretrainedModel, spec: str | None = None) -> dict[str, float]:
    """The card's test metrics of a loaded model on the test split of ``spec`` (default: the
    run's data): reconstruction, codebook health and rate, and the prior's held-out NLL.
    Writes nothing (the codes are not cached in the folder)."""
    from vqvae.pipeline.families import SplitCodes
    from vqvae.pipeline.run import RunDir

    family, model = loaded.family, loaded.model
    data = family.load_data(spec or RunDir(loaded.path).read_config()[1], loaded.config.model)
    metrics = family.reconstruction_metrics(model, data.test)
    if (loaded.path / CLASSIFIER).is_dir():
        metrics.update(family.shipped_classifier_metrics(model, data, loaded.path / CLASSIFIER))
    if loaded.priors:
        codes = family.encode(model, family.inputs(data.test, model))
        test = SplitCodes(codes, data.test.labels)
        metrics.update(family.prior_metrics(model, loaded.priors, test))
    return {k: float(v) for k, v in metrics.items()}


def total_bytes(root: Path | None = None) -> int:
    """Bytes of every file of every shipped model (the budget is ``BUDGET_BYTES``)."""
    root = ZOO if root is None else root
    return sum(p.stat().st_size for name in names(root) for p in (root / name).rglob("*"))


def _array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
