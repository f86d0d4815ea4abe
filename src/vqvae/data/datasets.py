"""``load_data``: the image dataset a spec names, as float32 ``(N, C, H, W)`` train and test sets.

The spec's scheme (``vqvae.data.schemes``) reads the data; the optional resize and channel
conversion are applied here, in one place, so that all sources behave the same.
"""

from __future__ import annotations

from vqvae.data.common import DataSplits, convert_channels, resize_images
from vqvae.data.schemes import parse_spec
from vqvae.errors import DataError


def load_data(
    spec: str, *, image_size: int | None = None, channels: int | None = None
) -> DataSplits:
    """Load the dataset named by ``spec`` as float32 ``(N, C, H, W)`` train and test sets.

    Specs: ``digits`` (scikit-learn's 8x8 digits), ``mnist:DIR``, ``fashion-mnist:DIR`` (the four
    official IDX files), ``folder:DIR`` (image files, see ``vqvae.data.images``), ``npz:FILE`` and
    ``npy:FILE`` (see ``vqvae.data.arrays``), ``cifar:DIR`` or ``cifar:ARCHIVE`` (CIFAR-10/100
    python batches, see ``vqvae.data.cifar``), and any image scheme registered in ``SCHEMES``.
    ``channels`` (1 or 3) converts the channels; ``image_size`` resizes to a square: folders
    always are (default 32), other sources keep their native size when it is None.
    """
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise DataError(f"{spec}: channels must be 1 or 3, got {channels!r}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise DataError(f"{spec}: image_size must be a positive integer, got {image_size!r}")

    scheme, path = parse_spec(spec, "images")
    train, test = scheme.load(path, image_size=image_size, channels=channels)
    for part in (train, test):
        if image_size is not None:
            part.images = resize_images(part.images, image_size)
        if channels is not None:
            part.images = convert_channels(part.images, channels, spec)
    return DataSplits(train=train, test=test, spec=spec)
