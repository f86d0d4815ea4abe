"""Datasets (images as float32 NCHW in [0, 1]), dataset downloads and codes files."""

from vqvae.data.codes import Codes, load_codes, save_codes
from vqvae.data.datasets import DataSplits, ImageSet, load_data
from vqvae.data.download import download_dataset
from vqvae.errors import DataError

__all__ = [
    "Codes",
    "DataError",
    "DataSplits",
    "ImageSet",
    "download_dataset",
    "load_codes",
    "load_data",
    "save_codes",
]
