"""download_dataset against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vqvae.data import DataError, download_dataset, load_data
from vqvae.data import download as download_module
from vqvae.data.idx import IDX_FILES, encode_idx


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder served over HTTP on 127.0.0.1; yields (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_mnist(served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """Four small fake IDX .gz files on the server, with the checksum table pointed at them."""
    base, root = served
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (8, 6, 6), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 8, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (3, 6, 6), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 3, dtype=np.uint8),
    }
    digests = {}
    for name, array in arrays.items():
        data = gzip.compress(encode_idx(array))
        (root / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(download_module.CHECKSUMS, "mnist", digests)
    return base, root


def test_download_then_load(fake_mnist: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = fake_mnist
    dest = tmp_path / "out" / "mnist"
    assert download_dataset("mnist", dest, base_url=base, timeout=5) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(IDX_FILES)
    splits = load_data(f"mnist:{dest}")
    assert splits.train.images.shape == (8, 1, 6, 6) and len(splits.test) == 3


def test_present_files_are_skipped(fake_mnist: tuple[str, Path], tmp_path: Path) -> None:
    base, root = fake_mnist
    dest = tmp_path / "dest"
    download_dataset("mnist", dest, base_url=base.rstrip("/"), timeout=5)
    for name in IDX_FILES:  # the server no longer has them: any request would fail
        (root / name).unlink()
    download_dataset("mnist", dest, base_url=base, timeout=5)
    assert len(list(dest.iterdir())) == 4


def test_wrong_local_file_is_replaced(fake_mnist: tuple[str, Path], tmp_path: Path) -> None:
    base, root = fake_mnist
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / IDX_FILES[0]).write_bytes(b"stale")
    download_dataset("mnist", dest, base_url=base, timeout=5)
    assert (dest / IDX_FILES[0]).read_bytes() == (root / IDX_FILES[0]).read_bytes()


def test_checksum_mismatch_leaves_nothing(fake_mnist: tuple[str, Path], tmp_path: Path) -> None:
    base, root = fake_mnist
    (root / IDX_FILES[0]).write_bytes(b"tampered")
    dest = tmp_path / "dest"
    expected = download_module.CHECKSUMS["mnist"][IDX_FILES[0]]
    actual = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(DataError, match="checksum mismatch") as info:
        download_dataset("mnist", dest, base_url=base, timeout=5)
    message = str(info.value)
    assert base + IDX_FILES[0] in message and expected in message and actual in message
    assert list(dest.iterdir()) == []  # neither the file nor a temporary file


def test_http_404(fake_mnist: tuple[str, Path], tmp_path: Path) -> None:
    base, root = fake_mnist
    (root / IDX_FILES[2]).unlink()
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=f"{base}{IDX_FILES[2]}: download failed .*404"):
        download_dataset("mnist", dest, base_url=base, timeout=5)
    # The files before the missing one were verified and kept; no partial file is left.
    assert sorted(p.name for p in dest.iterdir()) == sorted(IDX_FILES[:2])


def test_unreachable_server_and_bad_name(tmp_path: Path) -> None:
    # Bind then close a socket: the port is then (almost certainly) closed -> connection refused.
    server = http.server.HTTPServer(("127.0.0.1", 0), QuietHandler)
    port = server.server_address[1]
    server.server_close()
    with pytest.raises(DataError, match=f"http://127.0.0.1:{port}/.*download failed"):
        download_dataset(
            "fashion-mnist", tmp_path / "d", base_url=f"http://127.0.0.1:{port}", timeout=2
        )
    with pytest.raises(DataError, match="unknown dataset 'cifar10'"):
        download_dataset("cifar10", tmp_path / "d")


def test_checksum_table_has_official_names() -> None:
    for name in ("mnist", "fashion-mnist"):
        assert sorted(download_module.CHECKSUMS[name]) == sorted(IDX_FILES)
        assert all(len(d) == 64 for d in download_module.CHECKSUMS[name].values())
        assert download_module.BASE_URLS[name].endswith("/")
