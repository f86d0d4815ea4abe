"""Vector-Quantized VAEs and the two-stage generative pipeline: a library and the ``vqvae``
command. Importing the package loads nothing heavy; the subpackages hold the parts
(``vqvae.quantizers``, ``vqvae.models``, ``vqvae.priors``, ``vqvae.pipeline``…).

``vqvae.pretrained(name)`` loads a model shipped with the package (``vqvae.zoo``), offline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vqvae.zoo import PretrainedModel


def pretrained(name: str) -> PretrainedModel:
    """The shipped model ``name`` (``vqvae pretrained`` lists them), its files' checksums
    verified: ``.model`` (the VQ-VAE), ``.priors``, ``.card``; see ``vqvae.zoo``."""
    from vqvae.zoo import pretrained as load

    return load(name)
