"""The codec: bit-exact round trips for every family with a prior (PixelCNN, Transformer,
VQ-VAE-2, audio) across batch sizes and thread counts, size against the prior's NLL, the
frequency tables, the archive format, and the errors of bad archives from the command line."""

import copy
import math
import zlib

import numpy as np
import pytest
import torch
from helpers import spread_weights, tiny_vqvae, write_bar_images, write_tone_clips
from PIL import Image

pytest.importorskip("constriction", reason="the codec needs the optional constriction package")

from vqvae.cli.main import main  # noqa: E402
from vqvae.codec import Archive, ArchiveError, Codec, frequencies, to_uint8  # noqa: E402
from vqvae.codec.archive import varint  # noqa: E402
from vqvae.codec.tables import LOGIT_STEP, TOP  # noqa: E402
from vqvae.models import AudioVQVAE, AudioVQVAEConfig  # noqa: E402
from vqvae.models.vqvae2 import VQVAE2, VQVAE2Config  # noqa: E402
from vqvae.pipeline.families import FAMILIES  # noqa: E402
from vqvae.priors import (  # noqa: E402
    GatedPixelCNN,
    PixelCNNConfig,
    TransformerPrior,
    TransformerPriorConfig,
)
from vqvae.quantizers import QuantizerConfig  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread_each():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _image_codec(kind: str, classes: int = 3) -> Codec:
    torch.manual_seed(0)
    model = tiny_vqvae(codebook_size=16).eval()  # 8×8 images -> 4×4 codes
    if kind == "pixelcnn":
        config = PixelCNNConfig(
            codebook_size=16, channels=8, layers=3, kernel_size=3, num_classes=classes
        )
        prior = GatedPixelCNN(config)
    else:
        config = TransformerPriorConfig(
            codebook_size=16, dim=16, heads=2, layers=2, num_classes=classes, label_dropout=0.1
        )
        prior = TransformerPrior(config)
    return Codec(FAMILIES.get("vqvae"), model, [spread_weights(prior, 1)], b"model-id")


def _vqvae2_codec() -> Codec:
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=16, dim=4)
    config = VQVAE2Config(
        in_channels=1,
        image_size=8,
        downsample=2,
        top_downsample=2,
        hidden=8,
        res_hidden=4,
        res_blocks=1,
        quantizer=q,
        top_quantizer=q,
    )
    model = VQVAE2(config).eval()
    top = GatedPixelCNN(PixelCNNConfig(codebook_size=16, channels=8, layers=2, kernel_size=3))
    bottom = GatedPixelCNN(
        PixelCNNConfig(codebook_size=16, channels=8, layers=2, kernel_size=3, cond_codebook_size=16)
    )
    priors = [spread_weights(top, 2), spread_weights(bottom, 3)]
    return Codec(FAMILIES.get("vqvae2"), model, priors, b"vqvae-2!")


def _audio_codec() -> Codec:
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=16, dim=4)
    config = AudioVQVAEConfig(
        length=256,
        window=0,
        downsample=16,
        hidden=16,
        res_blocks=1,
        stft_weight=0,
        mel_weight=0,
        quantizer=q,
    )
    model = AudioVQVAE(config).eval()  # 256 samples -> 16 codes
    prior = TransformerPrior(
        TransformerPriorConfig(
            codebook_size=16, dim=16, heads=2, layers=2, layout="1d", max_length=16, num_classes=2
        )
    )
    return Codec(FAMILIES.get("audio"), model, [spread_weights(prior, 4)], b"audio-id")


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=np.float32)


CODECS = {
    "pixelcnn": lambda: _image_codec("pixelcnn"),
    "transformer": lambda: _image_codec("transformer"),
    "vqvae2": _vqvae2_codec,
    "audio": _audio_codec,
}


def _inputs(name: str, n: int) -> np.ndarray:
    if name == "audio":
        return np.random.default_rng(0).normal(0, 0.3, (n, 256)).astype(np.float32)
    return _images(n)


@pytest.mark.parametrize("name", list(CODECS))
def test_round_trip_is_exact_across_batch_sizes_and_threads(name):
    codec = CODECS[name]()
    x = _inputs(name, 20)
    labels = np.arange(20) % 2 if codec.label_rows else None
    codes = codec.encode(x)
    codec.set_batch(16)
    data = codec.compress_codes(codes, labels)
    reference = codec.decode(codes)
    for batch, threads in ((1, 1), (7, 2), (20, 1)):
        torch.set_num_threads(threads)
        codec.set_batch(batch)
        indices, decoded = codec.decompress(data)
        for got, want in zip(indices, codes, strict=True):
            assert got.dtype == np.int64 and np.array_equal(got, want), (batch, threads)
        assert np.array_equal(decoded, reference)
    # compressing with another batch size and thread count gives the same archive
    codec.set_batch(5)
    assert codec.compress_codes(codes, labels) == data


def test_decoded_images_are_the_models_decode_in_8_bits():
    codec = _image_codec("pixelcnn")
    x = _images(20)
    data = codec.compress(x, np.arange(20) % 3)
    indices, decoded = codec.decompress(data)
    assert np.array_equal(indices[0], codec.model.encode(torch.from_numpy(x)).numpy())
    with torch.no_grad():
        codes = torch.from_numpy(indices[0])
        model64 = copy.deepcopy(codec.model).double()
        direct64 = model64.decode_indices(codes).clamp(0, 1).numpy()
        direct32 = codec.model.decode_indices(codes).clamp(0, 1).numpy()
    assert np.array_equal(to_uint8(decoded), to_uint8(direct64))
    # the model's own float32 decode: the same 8-bit pixels but where a pixel sits on a
    # rounding boundary (then one level apart)
    assert np.abs(to_uint8(decoded).astype(int) - to_uint8(direct32)).max() <= 1


@pytest.mark.parametrize("name", list(CODECS))
def test_size_is_the_priors_nll_plus_a_few_bytes(name):
    codec = CODECS[name]()
    x = _inputs(name, 60)
    codes = codec.encode(x)
    labels = codec.coded_labels(codes, None)  # each item's cheapest class
    data = codec.compress_codes(codes, labels)
    payload = Archive.from_bytes(data, "a").payload_bytes
    nll_bytes = codec.item_bits(codes, labels).sum() / 8
    label_bytes = 60 * math.log2(codec.label_rows) / 8 if codec.label_rows else 0
    # a stream length (1 byte here) and about 0.3 bytes of flushing an item
    assert payload <= 1.01 * (nll_bytes + label_bytes) + 2 * 60
    # and not below what the tables allow: the coded size is at least the information content
    # of the codes under the quantized tables (an independent count from the tables alone)
    assert 8 * payload >= _table_bits(codec, codes, labels) - 1e-6


def _table_bits(codec: Codec, codes, labels) -> float:
    """-Σ log2 p(code) under the frequency tables, computed with the full forward pass of the
    float64 priors (not the cached decoder the codec runs)."""
    bits = 0.0
    lab = None if labels is None else torch.from_numpy(labels)
    tensors = [torch.from_numpy(c) for c in codes]
    for level, prior, c in zip(codec.levels, codec._priors64, tensors, strict=True):
        cond = None if level.conditioned_on is None else tensors[level.conditioned_on]
        with torch.no_grad():
            logits = prior(c, lab, cond).flatten(2).transpose(1, 2)  # (B, N, K)
        table = frequencies(logits.reshape(-1, logits.shape[-1]))
        p = table[np.arange(len(table)), c.reshape(-1).numpy()] / table.sum(1)
        bits += float(-np.log2(p).sum())
    return bits


def test_best_labels_pick_the_cheapest_class():
    codec = _image_codec("pixelcnn")
    codes = codec.encode(_images(12))
    chosen = codec.best_labels(codes)
    per_class = np.stack([codec.item_bits(codes, np.full(12, c)) for c in range(3)])
    assert np.array_equal(chosen, per_class.argmin(0))
    assert np.all(codec.item_bits(codes, chosen) <= per_class.min(0) + 1e-9)


def test_frequency_tables():
    logits = torch.randn(50, 512, dtype=torch.float64) * 4
    table = frequencies(logits)
    assert table.shape == (50, 512) and table.min() >= 1 and np.all(table == np.round(table))
    top = logits.argmax(1).numpy()
    assert np.all(table[np.arange(50), top] == TOP)
    # monotone in the logits, and a function of the rounded logits only
    order = np.argsort(logits[0].numpy())
    assert np.all(np.diff(table[0][order]) >= 0)
    assert np.array_equal(frequencies(logits + 1e-10), table)
    rounded = torch.round(logits / LOGIT_STEP) * LOGIT_STEP
    assert np.array_equal(frequencies(rounded + 0.4 * LOGIT_STEP), table)
    assert np.array_equal(frequencies(logits + 7 * LOGIT_STEP), table)  # shift-invariant
    shifted = (rounded - rounded.max(1, keepdim=True).values).numpy()
    assert np.array_equal(table, np.maximum(1, np.round(TOP * np.exp(shifted))))
    with pytest.raises(TypeError):
        frequencies(logits.float())
    with pytest.raises(ValueError):
        frequencies(torch.full((1, 4), math.nan, dtype=torch.float64))


def test_cached_and_full_float64_logits_agree_to_far_below_the_rounding_step():
    """What makes the tables reproducible: the float64 logits of one item do not depend on
    the batch it is computed in, nor on the path (cached decoder or full forward)."""
    codec = _image_codec("pixelcnn")
    prior = codec._priors64[0]
    codes = torch.from_numpy(codec.encode(_images(9))[0]).reshape(9, -1)
    labels = torch.arange(9) % 3
    with torch.no_grad():
        full = prior(codes.reshape(9, 4, 4), labels).flatten(2).transpose(1, 2)  # (9, 16, K)
        steps = []
        decoder = prior.decoder(9, (4, 4), labels)
        for t in range(16):
            steps.append(decoder.logits(codes, t))
        one = prior.decoder(1, (4, 4), labels[4:5])
        single = torch.stack([one.logits(codes[4:5], t) for t in range(16)], 1)
    cached = torch.stack(steps, 1)
    assert (cached - full).abs().max() < 1e-9
    assert (cached[4:5] - single).abs().max() < 1e-12


def test_varint_and_archive_round_trip():
    for n in (0, 1, 127, 128, 300, 2**40):
        data = varint(n)
        assert len(data) == max(1, math.ceil(n.bit_length() / 7))
    archive = Archive(
        b"12345678",
        [(2, 3), (4,)],
        [16, 512],
        [b"", b"\x01\x02", b"x" * 200],
        0xDEADBEEF,
        labelled=True,
        names=["a", "dir/é", "c"],
        lengths=[5, 0, 70000],
    )
    data = archive.to_bytes()
    back = Archive.from_bytes(data, "f")
    assert back == archive and back.payload_bytes == 1 + 1 + 2 + 0 + 2 + 200
    assert zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "big")


def test_archive_errors_in_the_library():
    codec = _image_codec("pixelcnn")
    data = codec.compress(_images(5), np.zeros(5, np.int64))
    for bad, message in (
        (b"", "empty file"),
        (b"PK\x03\x04" + data[4:], "not a vqvae archive"),
        (data[:-1], "checksum mismatch"),
        (data[:10], "truncated"),
        (data[:4] + bytes([9]) + data[5:], "format version 9"),
    ):
        with pytest.raises(ArchiveError, match=message):
            codec.decompress(bad)
    other = _image_codec("transformer")
    with pytest.raises(ArchiveError, match="another model"):
        Codec(other.family, other.model, other.priors, b"other-id").decompress(data)


# --------------------------------------------------------------------------- the CLI

TINY = [
    "model.downsample=2",
    "model.hidden=8",
    "model.res_hidden=4",
    "model.res_blocks=1",
    "model.quantizer.codebook_size=8",
    "model.quantizer.dim=4",
    "train.batch_size=16",
    "prior.channels=8",
    "prior.layers=2",
    "prior.kernel_size=3",
    "prior_train.batch_size=16",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs on the same data (3 classes of 8×8 bars): a conditional PixelCNN prior."""
    root = tmp_path_factory.mktemp("codec")
    spec = write_bar_images(root, 90)
    torch.set_num_threads(1)
    out = []
    for name, seed in (("a", 0), ("b", 1)):
        run = root / name
        argv = ["train", "--data", spec, "--out", str(run), "--steps", "10", f"train.seed={seed}"]
        assert main([*argv, *TINY]) == 0
        assert main(["train-prior", str(run), "--steps", "10"]) == 0
        out.append(run)
    return spec, *out


def test_cli_compresses_a_data_spec_and_decompresses_it_exactly(runs, tmp_path, capsys):
    spec, run, _ = runs
    archive = tmp_path / "test.vqz"
    assert main(["compress", str(run), spec, "--split", "test", "--out", str(archive)]) == 0
    report = capsys.readouterr().out
    assert "bits_per_pixel" in report and "prior_nll_bits_per_item" in report
    assert (tmp_path / "test.vqz.json").is_file()
    out = tmp_path / "png"
    assert (
        main(["decompress", str(archive), "--run", str(run), "--out", str(out), "--batch", "1"])
        == 0
    )
    files = sorted(out.iterdir())
    assert [f.name for f in files[:2]] == ["00000.png", "00001.png"] and len(files) == 9

    codec = Codec.from_run(run)
    from vqvae.data import load_data

    images = load_data(spec).test.images
    indices, decoded = codec.decompress(archive.read_bytes())
    assert np.array_equal(indices[0], codec.encode(images)[0])
    png = np.stack([np.asarray(Image.open(f)) for f in files])[..., None]
    assert np.array_equal(png, to_uint8(decoded))


def test_cli_compresses_an_image_folder_keeping_names(runs, tmp_path, capsys):
    _, run, _ = runs
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("one.png", "sub/two.png"):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(folder / name)
    archive = tmp_path / "f.vqz"
    assert main(["compress", str(run), str(folder), "--out", str(archive)]) == 0
    assert main(["compress", str(run), str(folder / "one.png"), "--out", str(tmp_path / "1.vqz"),
                 "--label", "2"]) == 0  # fmt: skip
    out = tmp_path / "dec"
    assert main(["decompress", str(archive), "--run", str(run), "--out", str(out)]) == 0
    assert (out / "one.png").is_file() and (out / "sub" / "two.png").is_file()
    capsys.readouterr()
    assert main(["compress", str(run), str(folder), "--out", str(archive), "--label", "3"]) == 2
    assert "--label must be in [0, 3)" in capsys.readouterr().err


def test_cli_bad_archives_are_one_line_exit_2_and_write_nothing(runs, tmp_path, capsys):
    spec, run, other = runs
    archive = tmp_path / "good.vqz"
    assert main(["compress", str(run), spec, "--out", str(archive)]) == 0
    good = archive.read_bytes()
    rng = np.random.default_rng(0)
    flips = []
    for bit in rng.choice(8 * len(good), size=12, replace=False):
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        flips.append(bytes(bad))
    cases = [
        (good[: len(good) // 2], run, "checksum mismatch"),
        (good[:-1], run, "checksum mismatch"),
        (b"", run, "empty file"),
        (good, other, "another model or prior"),
        (b"hello world, not an archive", run, "not a vqvae archive"),
    ] + [(bad, run, "") for bad in flips]
    capsys.readouterr()
    for i, (data, with_run, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.vqz"
        path.write_bytes(data)
        out = tmp_path / f"out{i}"
        assert main(["decompress", str(path), "--run", str(with_run), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("vqvae decompress:")]
        assert len(errors) == 1 and "error: " in errors[0] and "Traceback" not in err, err
        assert message in errors[0] and str(path) in errors[0]
        assert not out.exists()
    assert main(["decompress", str(tmp_path / "missing.vqz"), "--run", str(run), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "no such file" in capsys.readouterr().err


def test_cli_audio_wavs_round_trip_with_their_lengths(tmp_path):
    from scipy.io import wavfile

    root = write_tone_clips(tmp_path / "recordings")
    run = tmp_path / "audio"
    tiny = ["model.length=512", "model.window=256", "model.downsample=8", "model.hidden=16",
            "model.res_blocks=1", "model.stft_sizes=[128, 64]", "model.mel_fft=128",
            "model.mel_bands=16", "model.quantizer.codebook_size=16", "model.quantizer.dim=8",
            "train.batch_size=8", "train.checkpoint_every=0"]  # fmt: skip
    assert main(["train", "--data", f"fsdd:{root}", "--out", str(run), "--steps", "5", *tiny]) == 0
    prior = ["prior.dim=16", "prior.heads=2", "prior.layers=1", "prior_train.batch_size=8"]
    assert main(["train-prior", str(run), "--steps", "5", *prior]) == 0
    archive = tmp_path / "clips.vqz"
    assert main(["compress", str(run), str(root), "--out", str(archive), "--batch", "5"]) == 0
    out = tmp_path / "wavs"
    assert main(["decompress", str(archive), "--run", str(run), "--out", str(out)]) == 0
    assert main(["compress", str(run), f"fsdd:{root}", "--out", str(tmp_path / "t.vqz")]) == 0
    for i in range(6):
        rate, pcm = wavfile.read(out / f"1_ann_{i}.wav")
        assert rate == 8000 and len(pcm) == 300 + 20 * i  # the clip's real length
    codec = Codec.from_run(run)
    result = codec.decompress_archive(archive.read_bytes())
    assert list(result.lengths) == [300 + 20 * i for i in range(6)] * 2
    assert result.names[0] == "0_ann_0" and result.labels is not None
