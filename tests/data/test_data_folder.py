"""folder:DIR specs: layouts, classes, image modes and sizes, and bad folders or files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqvae.data import DataError, load_data
from vqvae.data.images import find_images, read_image


def save(path: Path, mode: str, size: tuple[int, int], colour: object = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_class_folders_mixed_sizes_and_modes(tmp_path: Path) -> None:
    save(tmp_path / "cat" / "a.png", "RGB", (40, 30), (255, 0, 0))
    save(tmp_path / "cat" / "nested" / "b.jpg", "L", (20, 50), 10)
    save(tmp_path / "dog" / "c.bmp", "RGBA", (33, 33), (0, 255, 0, 255))
    save(tmp_path / "dog" / "d.gif", "P", (16, 8), 3)
    save(tmp_path / "dog" / "e.png", "LA", (9, 12), (200, 255))
    save(tmp_path / "dog" / "f.png", "1", (10, 10), 1)
    (tmp_path / "dog" / "notes.txt").write_text("not an image, ignored")
    save(tmp_path / ".hidden" / "x.png", "RGB", (5, 5))
    save(tmp_path / "dog" / ".y.png", "RGB", (5, 5))

    splits = load_data(f"folder:{tmp_path}", image_size=16)
    assert len(splits.train) + len(splits.test) == 6 and len(splits.test) == 1
    for part in (splits.train, splits.test):
        assert part.images.shape[1:] == (3, 16, 16)  # colour present -> 3 channels
        assert part.images.dtype == np.float32
        assert part.class_names == ["cat", "dog"] and part.num_classes == 2
    labels = np.concatenate([splits.train.labels, splits.test.labels])
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 1, 1]
    images = np.concatenate([splits.train.images, splits.test.images])
    assert images.min() >= 0.0 and images.max() <= 1.0

    grey = load_data(f"folder:{tmp_path}", image_size=8, channels=1)
    assert grey.train.images.shape[1:] == (1, 8, 8)


def test_default_size_and_deterministic_split(tmp_path: Path) -> None:
    for i in range(12):
        save(tmp_path / f"img{i:02d}.png", "L", (40, 40), i * 20)
    a = load_data(f"folder:{tmp_path}")
    b = load_data(f"folder:{tmp_path}")
    assert a.train.images.shape == (11, 1, 32, 32) and a.test.images.shape == (1, 1, 32, 32)
    assert a.train.labels is None and a.train.num_classes is None
    np.testing.assert_array_equal(a.test.images, b.test.images)
    # Uniform images stay uniform through the resize: the test image is one of the 12 greys.
    value = a.test.images[0, 0, 0, 0] * 255
    np.testing.assert_allclose(a.test.images * 255, value, atol=1e-3)
    assert abs(value / 20 - round(value / 20)) < 1e-3


def test_train_test_subfolders(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            save(tmp_path / split / "b" / f"{i}.png", "RGB", (8, 8), (0, 0, 200))
    save(tmp_path / "train" / "a" / "x.png", "RGB", (8, 8))
    splits = load_data(f"folder:{tmp_path}", image_size=8)
    assert len(splits.train) == 4 and len(splits.test) == 2
    assert splits.train.class_names == ["a", "b"] and splits.test.labels.tolist() == [1, 1]
    assert splits.train.labels.tolist() == [0, 1, 1, 1]


def test_grey_only_gives_one_channel_and_alpha_on_white(tmp_path: Path) -> None:
    save(tmp_path / "a.png", "L", (4, 4), 0)
    save(tmp_path / "b.png", "LA", (4, 4), (0, 0))  # fully transparent black -> white
    save(tmp_path / "c.gif", "P", (4, 4), 0)  # default palette entry 0 is black: grey
    pixels = read_image(tmp_path / "b.png", 4)
    assert pixels.shape == (1, 4, 4) and np.all(pixels == 1.0)
    assert read_image(tmp_path / "c.gif", 4).shape[0] == 1
    splits = load_data(f"folder:{tmp_path}", image_size=4)
    assert splits.channels == 1


def test_rgba_composited_on_white_and_crop(tmp_path: Path) -> None:
    img = Image.new("RGBA", (30, 10), (255, 0, 0, 0))
    img.paste((0, 0, 255, 255), (10, 0, 20, 10))  # opaque blue middle third
    img.save(tmp_path / "x.png")
    pixels = read_image(tmp_path / "x.png", 10)  # shorter side already 10: crop the middle
    assert pixels.shape == (3, 10, 10)
    np.testing.assert_allclose(pixels[:, 5, 5], [0.0, 0.0, 1.0])
    big = read_image(tmp_path / "x.png", 20)  # 60x20 then crop the middle 20 columns
    np.testing.assert_allclose(big[:, 10, 10], [0.0, 0.0, 1.0], atol=1e-6)
    save(tmp_path / "w.png", "RGBA", (6, 6), (0, 0, 0, 0))
    assert np.all(read_image(tmp_path / "w.png", 6) == 1.0)


def test_sixteen_bit_png(tmp_path: Path) -> None:
    array = np.full((6, 6), 65535 // 4, dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "x.png")
    pixels = read_image(tmp_path / "x.png", 6)
    np.testing.assert_allclose(pixels, 0.25, atol=1e-4)


def test_find_images_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ["b/2.PNG", "a/10.jpeg", "a/9.png", "c.txt", ".d.png", "e/.f/g.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/10.jpeg", "a/9.png", "b/2.PNG"]


def test_empty_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path}: no image files"):
        load_data(f"folder:{tmp_path}")
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / ".hidden.png").write_bytes(b"")
    with pytest.raises(DataError, match="no image files"):
        load_data(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="no such folder"):
        load_data(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="no such folder"):
        load_data(f"folder:{tmp_path / 'readme.txt'}")


def test_single_image_cannot_be_split(tmp_path: Path) -> None:
    save(tmp_path / "a.png", "L", (4, 4))
    with pytest.raises(DataError, match="too few"):
        load_data(f"folder:{tmp_path}")


@pytest.mark.parametrize(
    "content", [b"this is text, not a PNG", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b""]
)
def test_unreadable_image_names_file(tmp_path: Path, content: bytes) -> None:
    for i in range(3):
        save(tmp_path / f"ok{i}.png", "L", (4, 4))
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=f"{bad}: not a readable image"):
        load_data(f"folder:{tmp_path}")


def test_truncated_png_names_file(tmp_path: Path) -> None:
    save(tmp_path / "ok.png", "L", (4, 4))
    save(tmp_path / "bad.png", "RGB", (64, 64), (1, 2, 3))
    data = (tmp_path / "bad.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        load_data(f"folder:{tmp_path}")


def test_bad_layouts(tmp_path: Path) -> None:
    save(tmp_path / "a" / "cls" / "x.png", "L", (4, 4))
    save(tmp_path / "a" / "loose.png", "L", (4, 4))
    with pytest.raises(DataError, match="loose images"):
        load_data(f"folder:{tmp_path / 'a'}")
    save(tmp_path / "b" / "train" / "x.png", "L", (4, 4))
    with pytest.raises(DataError, match="no test/ folder"):
        load_data(f"folder:{tmp_path / 'b'}")
    save(tmp_path / "b" / "test" / "k" / "y.png", "L", (4, 4))
    with pytest.raises(DataError, match="one of train/ and test/ has class subfolders"):
        load_data(f"folder:{tmp_path / 'b'}")
    save(tmp_path / "c" / "train" / "x.png", "L", (4, 4))
    (tmp_path / "c" / "test").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'c' / 'test'}: no image files"):
        load_data(f"folder:{tmp_path / 'c'}")
    save(tmp_path / "c" / "test" / "y.png", "L", (4, 4))
    save(tmp_path / "c" / "stray.png", "L", (4, 4))
    with pytest.raises(DataError, match="outside train/ and test/"):
        load_data(f"folder:{tmp_path / 'c'}")
