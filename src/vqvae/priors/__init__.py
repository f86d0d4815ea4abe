"""Autoregressive priors over maps of VQ code indices, the shared sampling routine, and the
registry of prior kinds.

A prior kind is one ``AutoregressivePrior`` subclass (with its config dataclass as
``config_class``, whose ``kind`` field names it) plus one ``PRIORS.register(kind, cls)`` line;
``prior.kind`` in a run's config picks it (``RunConfig.prior``).
"""

from vqvae.priors.base import AutoregressivePrior
from vqvae.priors.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqvae.priors.sampling import filter_logits, sample_from_logits
from vqvae.priors.transformer import TransformerPrior, TransformerPriorConfig
from vqvae.registry import Registry

PRIORS: Registry[type[AutoregressivePrior]] = Registry("prior")
PRIORS.register("pixelcnn", GatedPixelCNN)
PRIORS.register("transformer", TransformerPrior)

__all__ = [
    "PRIORS",
    "AutoregressivePrior",
    "GatedPixelCNN",
    "PixelCNNConfig",
    "TransformerPrior",
    "TransformerPriorConfig",
    "build_prior",
    "filter_logits",
    "load_prior",
    "sample_from_logits",
]


def build_prior(config) -> AutoregressivePrior:
    """The prior a ``prior`` config section describes (its ``kind`` picks the class)."""
    return PRIORS.get(config.kind, "prior.kind")(config)


def load_prior(directory, map_location="cpu") -> AutoregressivePrior:
    """Load whichever registered prior a folder holds."""
    from vqvae import serialization
    from vqvae.errors import CheckpointError

    name = serialization.saved_type(directory)
    cls = PRIORS.find(lambda cls: cls.__name__ == name)
    if cls is None:
        raise CheckpointError(f"{directory}: holds a {name!r}, not a prior")
    return cls.from_pretrained(directory, map_location)
