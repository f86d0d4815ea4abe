"""The VQ-VAE and its prior as a codec: ``Codec`` (compress / decompress in memory), the
archive format, and the ``vqvae compress`` / ``vqvae decompress`` commands over files. Needs the
optional ``constriction`` package (``pip install 'vqvae[codec]'``)."""

from vqvae.codec.archive import Archive, ArchiveError
from vqvae.codec.codec import Codec, Decompressed
from vqvae.codec.commands import coded_rate, compress_input, decompress_file
from vqvae.codec.items import ITEM_FORMATS, ItemFormat, Items, to_uint8
from vqvae.codec.tables import frequencies

__all__ = [
    "ITEM_FORMATS",
    "Archive",
    "ArchiveError",
    "Codec",
    "Decompressed",
    "ItemFormat",
    "Items",
    "coded_rate",
    "compress_input",
    "decompress_file",
    "frequencies",
    "to_uint8",
]
