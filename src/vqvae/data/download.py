"""Download the official MNIST / Fashion-MNIST IDX files, verified by SHA-256."""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.error
import urllib.request
from pathlib import Path

from vqvae.data.idx import IDX_FILES
from vqvae.errors import DataError
from vqvae.files import atomic_path

logger = logging.getLogger(__name__)

BASE_URLS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

# SHA-256 of the official files (they match the authors' published MD5s). A module-level dict so
# tests can point it at small fake files.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
        ),
    },
}

_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download_dataset(
    name: str, dest: str | Path, *, base_url: str | None = None, timeout: float = 60
) -> Path:
    """Download the four IDX files of ``name`` ("mnist" or "fashion-mnist") into ``dest``.

    Files already in ``dest`` with the right checksum are kept. Each file is streamed into a
    temporary file beside its destination and renamed only once its SHA-256 matches, so ``dest``
    never holds a partial or unverified download. ``timeout`` (seconds) bounds each network wait.
    Returns ``dest``; ``load_data(f"{name}:{dest}")`` then reads it.
    """
    if name not in CHECKSUMS:
        raise DataError(
            f"unknown dataset {name!r} to download: expected one of {', '.join(CHECKSUMS)}"
        )
    dest = Path(dest).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest}: cannot create the download folder ({exc})") from exc
    base = (base_url or BASE_URLS[name]).rstrip("/") + "/"
    for filename in IDX_FILES:
        target = dest / filename
        expected = CHECKSUMS[name][filename]
        if target.is_file() and sha256_file(target) == expected:
            logger.info("%s: present with the right checksum, skipped", target)
            continue
        _fetch(base + filename, target, expected, timeout)
    return dest


def _fetch(url: str, target: Path, expected_sha256: str, timeout: float) -> None:
    """Stream ``url`` into ``target``; DataError (and nothing written) unless the digest matches."""
    logger.info("downloading %s", url)
    with atomic_path(target) as tmp:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                while chunk := response.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # URLError/HTTPError: unreachable host or HTTP status; OSError: timeouts and resets;
            # HTTPException: a response cut short; ValueError: a malformed URL.
            raise DataError(f"{url}: download failed ({exc})") from exc
        actual = digest.hexdigest()
        if actual != expected_sha256:
            # Raising inside atomic_path removes the temporary file.
            raise DataError(
                f"{url}: checksum mismatch, expected sha256 {expected_sha256}, got {actual}"
            )
