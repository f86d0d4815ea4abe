"""Priors over maps of VQ code indices (autoregressive ones, and the masked MaskGIT prior),
the shared sampling routine, and the registry of prior kinds.

A prior kind is one ``Prior`` subclass (``AutoregressivePrior`` for one with an exact
likelihood; ``Prior.exact_likelihood`` tells them apart), with its config dataclass as
``config_class``, whose ``kind`` field names it, plus one ``PRIORS.register(kind, cls)`` line;
``prior.kind`` in a run's config picks it (``RunConfig.prior``).
"""

from vqvae.priors.base import AutoregressivePrior, Prior
from vqvae.priors.maskgit import MaskGITPrior, MaskGITPriorConfig
from vqvae.priors.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqvae.priors.sampling import filter_logits, sample_from_logits
from vqvae.priors.transformer import TransformerPrior, TransformerPriorConfig
from vqvae.registry import Registry

PRIORS: Registry[type[Prior]] = Registry("prior")
PRIORS.register("pixelcnn", GatedPixelCNN)
PRIORS.register("transformer", TransformerPrior)
PRIORS.register("maskgit", MaskGITPrior)

__all__ = [
    "PRIORS",
    "AutoregressivePrior",
    "GatedPixelCNN",
    "MaskGITPrior",
    "MaskGITPriorConfig",
    "PixelCNNConfig",
    "Prior",
    "TransformerPrior",
    "TransformerPriorConfig",
    "build_prior",
    "filter_logits",
    "load_prior",
    "sample_from_logits",
]


def build_prior(config) -> Prior:
    """The prior a ``prior`` config section describes (its ``kind`` picks the class)."""
    return PRIORS.get(config.kind, "prior.kind")(config)


def load_prior(directory, map_location="cpu") -> Prior:
    """Load whichever registered prior a folder holds."""
    from vqvae import serialization
    from vqvae.errors import CheckpointError

    name = serialization.saved_type(directory)
    cls = PRIORS.find(lambda cls: cls.__name__ == name)
    if cls is None:
        raise CheckpointError(f"{directory}: holds a {name!r}, not a prior")
    return cls.from_pretrained(directory, map_location)
