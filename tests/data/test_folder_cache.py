"""The decode cache of folder: specs: a second load reads the cache and gives the same arrays
bit for bit; adding, removing, replacing or touching an image, or other decode settings,
rebuild it; a corrupted, truncated or foreign cache file falls back to decoding; the data
folder itself is never written to."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqvae.data import folder_cache, images, load_data


def save(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (6, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(colour))
    pixels = (rng.integers(0, 256, (*size[::-1], 3)) // 2 + np.array(colour) // 2).astype(np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    where = tmp_path / "cache"
    monkeypatch.setenv("VQVAE_FOLDER_CACHE", str(where))
    return where


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            save(root / split / ("cat" if i % 2 else "dog") / f"{i}.png", (40 * i, 20, 200))
    return root


@pytest.fixture
def decodes(monkeypatch):
    """How many images were decoded from their files."""
    count = [0]
    real = images.read_image

    def counting(path, size):
        count[0] += 1
        return real(path, size)

    monkeypatch.setattr(images, "read_image", counting)
    return count


def same(a, b):
    for x, y in ((a.train, b.train), (a.test, b.test)):
        assert x.images.dtype == y.images.dtype == np.float32
        np.testing.assert_array_equal(x.images, y.images)  # bit for bit (NaN-free data)
        assert x.images.tobytes() == y.images.tobytes()
        np.testing.assert_array_equal(x.labels, y.labels)
        assert x.class_names == y.class_names and x.num_classes == y.num_classes


def uncached(spec, monkeypatch, **kw):
    with monkeypatch.context() as m:
        m.setenv("VQVAE_FOLDER_CACHE", "off")
        return load_data(spec, **kw)


def test_second_load_reads_the_cache_bit_for_bit(folder, cache, decodes, monkeypatch):
    spec = f"folder:{folder}"
    first = load_data(spec, image_size=6)
    assert decodes[0] == 6 and len(list(cache.glob("*.npz"))) == 1
    second = load_data(spec, image_size=6)
    assert decodes[0] == 6  # nothing decoded again
    same(first, second)
    reference = uncached(spec, monkeypatch, image_size=6)
    assert decodes[0] == 12
    same(reference, second)
    assert not any(p.suffix == ".npz" for p in folder.rglob("*"))  # nothing in the data folder


def test_resized_and_grey_settings_are_cached_as_float32_exactly(folder, cache, monkeypatch):
    # image_size 4 resizes (values are no longer k/255) and channels=1 mixes the luma: the
    # cache must keep float32, and each setting has its own entry.
    for kw in ({"image_size": 4}, {"image_size": 6, "channels": 1}):
        load_data(f"folder:{folder}", **kw)
        same(uncached(f"folder:{folder}", monkeypatch, **kw), load_data(f"folder:{folder}", **kw))
    assert len(list(cache.glob("*.npz"))) == 2


def test_a_changed_folder_is_decoded_again(folder, cache, decodes):
    spec = f"folder:{folder}"
    load_data(spec, image_size=6)
    assert decodes[0] == 6

    save(folder / "train" / "cat" / "new.png", (1, 2, 3))  # added
    added = load_data(spec, image_size=6)
    assert decodes[0] == 13 and len(added.train) == 5
    assert len(list(cache.glob("*.npz"))) == 1  # the folder's entry was replaced, not added to

    (folder / "train" / "cat" / "new.png").unlink()  # removed
    assert len(load_data(spec, image_size=6).train) == 4 and decodes[0] == 19

    touched = folder / "test" / "dog" / "0.png"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched
    load_data(spec, image_size=6)
    assert decodes[0] == 25

    save(touched, (255, 255, 255), size=(12, 12))  # replaced by another image (another size)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # at the same mtime
    assert touched.stat().st_size != st.st_size
    replaced = load_data(spec, image_size=6)
    assert decodes[0] == 31
    # test/dog/0.png is the second test image, after cat/1.png
    np.testing.assert_array_equal(replaced.test.images[1], images.read_image(touched, 6))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "foreign"])
def test_a_damaged_cache_file_falls_back_to_decoding(folder, cache, decodes, damage, monkeypatch):
    spec = f"folder:{folder}"
    reference = load_data(spec, image_size=6)
    (path,) = cache.glob("*.npz")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # one byte inside the stored pixels: the zip's CRC-32 catches it
        at = data.find(b"train_images.npy") + 400
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "garbage":
        path.write_bytes(b"not a zip at all")
    else:  # a valid cache file of another folder, put in this one's place
        other = folder.parent / "other"
        save(other / "a.png", (9, 9, 9))
        save(other / "b.png", (99, 9, 9))
        load_data(f"folder:{other}", image_size=6)
        foreign = folder_cache.cache_file(other, {"image_size": 6, "channels": None})
        os.replace(foreign, path)
    before = decodes[0]
    stale = damage == "foreign"  # a stale key is not an error: rebuilt without a warning
    with nullcontext() if stale else pytest.warns(UserWarning, match="unreadable decode cache"):
        again = load_data(spec, image_size=6)
    assert decodes[0] == before + 6  # decoded, not read from the damaged file
    same(reference, again)
    same(reference, load_data(spec, image_size=6))  # and the cache is whole again
    assert decodes[0] == before + 6


def test_an_unwritable_cache_warns_and_the_data_still_loads(folder, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("VQVAE_FOLDER_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="decode cache not written"):
        splits = load_data(f"folder:{folder}", image_size=6)
    assert len(splits.train) == 4


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("VQVAE_FOLDER_CACHE")
    monkeypatch.delenv("VQVAE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert folder_cache.cache_dir() == tmp_path / "xdg" / "vqvae" / "folders"
    monkeypatch.setenv("VQVAE_CACHE_DIR", str(tmp_path / "own"))
    assert folder_cache.cache_dir() == tmp_path / "own" / "folders"
    monkeypatch.setenv("VQVAE_FOLDER_CACHE", "off")
    assert folder_cache.cache_dir() is None


def test_progress_bar_while_decoding(folder, cache, monkeypatch, capsys):
    monkeypatch.setattr(images, "PROGRESS_FROM", 1)
    load_data(f"folder:{folder}", image_size=6)
    assert "decoding data" in capsys.readouterr().err
    load_data(f"folder:{folder}", image_size=6)  # from the cache: no bar
    assert "decoding" not in capsys.readouterr().err


def test_pixels_are_stored_as_bytes_only_when_that_is_exact():
    exact = (np.arange(5 * 3 * 2 * 2).reshape(5, 3, 2, 2) % 256).astype(np.float32) / 255
    packed = folder_cache._packed(exact, rows=2)
    assert packed.dtype == np.uint8
    assert folder_cache._unpacked(packed).tobytes() == exact.tobytes()
    resized = exact.copy()
    resized[4, 0, 0, 0] = 0.5  # not k/255, in the last chunk
    assert folder_cache._packed(resized, rows=2) is resized  # kept as float32
