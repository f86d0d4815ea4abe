"""Model families: one ``ModelFamily`` per ``model.kind``, in the ``FAMILIES`` registry.

To add one: write a ``ModelFamily`` subclass (its data, its items, its fidelity measure, how
its outputs are written; ``families.base`` holds every shared verb) with ``@register_family``,
and register its model class in ``vqvae.models.MODELS`` under the same kind.
"""

from vqvae.pipeline.families import audio, image, vectors  # noqa: E402, F401  (registers them)
from vqvae.pipeline.families.base import (
    FAMILIES,
    CodeLevel,
    ModelFamily,
    SampleOptions,
    SplitCodes,
    register_family,
)

__all__ = ["FAMILIES", "CodeLevel", "ModelFamily", "SampleOptions", "SplitCodes", "register_family"]
