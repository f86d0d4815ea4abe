"""Datasets (images as float32 NCHW in [0, 1], audio, vectors), the data-spec schemes that name
them, dataset downloads and codes files."""

# Each loader module registers its data schemes in SCHEMES when imported, and this order is the
# order of the forms in help and error messages: image sources first, then audio.
# isort: off
from vqvae.data import digits, idx, images, arrays, cifar, audio  # noqa: F401
# isort: on

from vqvae.data.audio import AudioSet, AudioSplits, load_audio
from vqvae.data.codes import Codes, load_codes, save_codes
from vqvae.data.common import DataSplits, ImageSet
from vqvae.data.datasets import load_data
from vqvae.data.download import download_dataset
from vqvae.data.schemes import (
    SCHEMES,
    Scheme,
    default_model_kind,
    register_scheme,
    scheme_of,
    spec_forms,
    spec_help,
)
from vqvae.data.vectors import VectorSet, VectorSplits, load_vectors
from vqvae.errors import DataError

__all__ = [
    "SCHEMES",
    "AudioSet",
    "AudioSplits",
    "Codes",
    "DataError",
    "DataSplits",
    "ImageSet",
    "Scheme",
    "VectorSet",
    "VectorSplits",
    "default_model_kind",
    "download_dataset",
    "load_audio",
    "load_codes",
    "load_data",
    "load_vectors",
    "register_scheme",
    "save_codes",
    "scheme_of",
    "spec_forms",
    "spec_help",
]
