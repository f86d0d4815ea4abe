"""Residual stacks in the codec: an audio clip's (L, T') codes are one 2D map, levels as rows,
so coding the first k levels codes a prefix of the raster order. compress(levels=k) ->
decompress is bit-exact to decoding the first k levels, the archive records k (and nothing
else changes in its format), a corrupted or forged archive is refused, the size follows the
prior's NLL of the first k rows, and bad --levels / --bitrate values are one-line errors from
the command line; `evaluate` reports each depth."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import spread_weights, write_tone_clips

pytest.importorskip("constriction", reason="the codec needs the optional constriction package")

from vqvae.cli.main import main  # noqa: E402
from vqvae.codec import Archive, ArchiveError, Codec  # noqa: E402
from vqvae.errors import ConfigError  # noqa: E402
from vqvae.models import AudioVQVAE, AudioVQVAEConfig  # noqa: E402
from vqvae.pipeline.families import FAMILIES  # noqa: E402
from vqvae.priors import (  # noqa: E402
    GatedPixelCNN,
    PixelCNNConfig,
    TransformerPrior,
    TransformerPriorConfig,
)
from vqvae.quantizers import QuantizerConfig  # noqa: E402

L, K, T = 3, 16, 16  # levels, codes per level, codes per clip

pytestmark = pytest.mark.usefixtures("one_thread")


def _codec(prior_kind: str = "transformer", classes: int = 2) -> Codec:
    torch.manual_seed(0)
    q = QuantizerConfig(kind="residual", levels=L, codebook_size=K, dim=4, quantizer_dropout=0.5)
    config = AudioVQVAEConfig(
        length=256, window=0, downsample=16, hidden=16, res_blocks=1, stft_weight=0,
        mel_weight=0, quantizer=q,
    )  # fmt: skip
    model = AudioVQVAE(config).eval()  # 256 samples -> (3, 16) codes
    if prior_kind == "transformer":
        prior = TransformerPrior(
            TransformerPriorConfig(
                codebook_size=K, dim=16, heads=2, layers=2, max_rows=L, max_cols=T,
                num_classes=classes,
            )
        )  # fmt: skip
    else:
        prior = GatedPixelCNN(
            PixelCNNConfig(
                codebook_size=K, channels=8, layers=3, kernel_size=3, num_classes=classes
            )
        )
    return Codec(FAMILIES.get("audio"), model, [spread_weights(prior, 4)], b"rvq-id!!")


def _clips(n: int) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.3, (n, 256)).astype(np.float32)


@pytest.mark.parametrize("prior_kind", ["transformer", "pixelcnn"])
def test_k_levels_round_trip_bit_exact_and_the_archive_records_k(prior_kind):
    codec = _codec(prior_kind)
    x = _clips(10)
    labels = np.arange(10) % 2
    (codes,) = codec.encode(x)
    assert codes.shape == (10, L, T)
    sizes = []
    for k in range(1, L + 1):
        data = codec.compress(x, labels, levels=k)
        archive = Archive.from_bytes(data, "a")
        assert archive.shapes == [(k, T)]  # the archive records k
        sizes.append(archive.payload_bytes)
        for batch in (1, 10):
            codec.set_batch(batch)
            out = codec.decompress_archive(data)
            assert np.array_equal(out.indices[0], codes[:, :k])
            assert np.array_equal(out.outputs, codec.decode([codes[:, :k]]))
        with torch.no_grad():  # the float64 model's decode of the first k levels
            direct = codec._model64.decode_indices(torch.from_numpy(codes[:, :k]))[:, 0]
        assert np.array_equal(out.outputs, direct.numpy().astype(np.float32))
        # the same as the full archive's codes cut to k levels, and as compress_codes of them
        assert codec.compress_codes([codes[:, :k]], labels) == data
    assert sizes[0] < sizes[1] < sizes[2]
    assert codec.compress(x, labels) == codec.compress(x, labels, levels=L)


def test_the_first_k_rows_cost_the_priors_first_k_rows_conditionals():
    codec = _codec()
    x = _clips(30)
    (codes,) = codec.encode(x)
    labels = codec.coded_labels([codes], None)
    with torch.no_grad():  # the full map's logits: rows below k do not change rows < k
        logits = codec.priors[0](torch.from_numpy(codes), torch.from_numpy(labels))
        nats = torch.nn.functional.cross_entropy(logits, torch.from_numpy(codes), reduction="none")
    per_row = nats.sum((0, 2)).double().numpy() / math.log(2)  # (L,) bits
    for k in range(1, L + 1):
        bits = codec.item_bits([codes[:, :k]], labels).sum()
        assert bits == pytest.approx(per_row[:k].sum(), rel=1e-5)
        payload = Archive.from_bytes(codec.compress_codes([codes[:, :k]], labels), "a")
        label_bits = 30 * math.log2(codec.label_rows)
        assert 8 * payload.payload_bytes <= 1.01 * (bits + label_bits) + 16 * 30


def test_depth_options():
    codec = _codec()
    assert codec.residual_levels == L
    assert codec.depth() is None and codec.depth(levels=2) == 2
    per_level = codec.model.bits_per_second / L  # 500 codes/s · 4 bits = 2000 bit/s
    assert per_level == 2000
    assert codec.depth(bitrate=2000) == 1 and codec.depth(bitrate=5999) == 2
    assert codec.depth(bitrate=6000) == 3 and codec.depth(bitrate=1e9) == 3
    for kwargs, message in (
        ({"levels": 0}, r"--levels must be in \[1, 3\]"),
        ({"levels": 4}, r"--levels must be in \[1, 3\]"),
        ({"bitrate": 1999.0}, "--bitrate must be at least one level's raw rate, 2000 bit/s"),
        ({"bitrate": math.nan}, "--bitrate must be at least"),
        ({"levels": 1, "bitrate": 4000.0}, "not both"),
    ):
        with pytest.raises(ConfigError, match=message):
            codec.depth(**kwargs)


def test_a_forged_depth_or_a_corrupted_archive_is_refused():
    codec = _codec()
    x = _clips(4)
    data = codec.compress(x, np.zeros(4, np.int64), levels=2)
    archive = Archive.from_bytes(data, "a")
    for shape in ((L + 1, T), (0, T), (2, T + 1)):
        archive.shapes = [shape]
        with pytest.raises(ArchiveError, match="code shapes"):
            codec.decompress(archive.to_bytes())  # a valid checksum, a shape the model lacks
    rng = np.random.default_rng(0)
    for bit in rng.choice(8 * len(data), size=8, replace=False):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ArchiveError):
            codec.decompress(bytes(bad))


def test_a_model_without_residual_levels_refuses_levels():
    codec = _codec()
    flat = QuantizerConfig(codebook_size=K, dim=4)
    config = AudioVQVAEConfig(
        length=256, window=0, downsample=16, hidden=16, res_blocks=1, stft_weight=0,
        mel_weight=0, quantizer=flat,
    )  # fmt: skip
    model = AudioVQVAE(config)
    prior = TransformerPrior(
        TransformerPriorConfig(
            codebook_size=K, dim=16, heads=2, layers=1, layout="1d", max_length=T
        )
    )
    plain = Codec(codec.family, model.eval(), [prior.eval()], b"plain-id")
    assert plain.residual_levels == 0
    with pytest.raises(ConfigError, match="--levels applies to a residual quantizer"):
        plain.depth(levels=1)
    with pytest.raises(ConfigError, match="--bitrate applies to a residual quantizer"):
        plain.depth(bitrate=8000.0)


# --------------------------------------------------------------------------- the CLI

TINY = [
    "model.length=512", "model.window=256", "model.downsample=16", "model.hidden=16",
    "model.res_blocks=1", "model.stft_sizes=[128, 64]", "model.mel_fft=128",
    "model.mel_bands=16", "model.quantizer.kind=residual", "model.quantizer.levels=3",
    "model.quantizer.codebook_size=16", "model.quantizer.dim=8",
    "model.quantizer.quantizer_dropout=1.0", "train.batch_size=8", "train.checkpoint_every=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    """A tiny residual audio run (3 levels, dropout) with a 2D Transformer prior over its
    (3, 32) code maps, on 12 synthetic two-class clips."""
    tmp = tmp_path_factory.mktemp("rvq")
    root = write_tone_clips(tmp / "recordings")
    run = tmp / "run"
    torch.set_num_threads(1)
    assert main(["train", "--data", f"fsdd:{root}", "--out", str(run), "--steps", "4", *TINY]) == 0
    prior = ["prior.dim=16", "prior.heads=2", "prior.layers=1", "prior_train.batch_size=8"]
    assert main(["train-prior", str(run), "--steps", "3", *prior]) == 0
    return root, run


def test_train_prior_fits_a_2d_prior_over_the_level_by_time_maps(audio_run):
    _, run = audio_run
    config = json.loads((run / "prior" / "model" / "config.json").read_text())["config"]
    assert config["layout"] == "2d" and config["max_rows"] >= 3 and config["max_cols"] >= 32
    codec = Codec.from_run(run)
    assert codec.levels[0].shape == (3, 32) and codec.residual_levels == 3


def test_cli_compress_levels_then_decompress(audio_run, tmp_path):
    root, run = audio_run
    reports = []
    for option in (["--levels", "1"], ["--bitrate", "2500"], []):  # 500 codes/s · 4 bits
        archive = tmp_path / f"k{len(reports)}.vqz"
        args = ["compress", str(run), str(root), "--out", str(archive), *option]
        assert main(args) == 0
        reports.append(json.loads((tmp_path / f"{archive.name}.json").read_text()))
        out = tmp_path / f"wavs{len(reports)}"
        assert main(["decompress", str(archive), "--run", str(run), "--out", str(out)]) == 0
        assert len(list(out.iterdir())) == 12
        codec = Codec.from_run(run)
        result = codec.decompress_archive(archive.read_bytes())
        k = reports[-1]["levels"]
        assert result.indices[0].shape == (12, k, 32)
    assert [r["levels"] for r in reports] == [1, 1, 3]
    assert reports[0]["bits_per_second"] < reports[2]["bits_per_second"]


@pytest.mark.parametrize(
    "option, message",
    [
        (["--levels", "0"], "--levels must be >= 1, got 0"),
        (["--levels", "4"], "--levels must be in [1, 3]"),
        (["--bitrate", "nan"], "--bitrate must be a number > 0"),
        (["--bitrate", "100"], "--bitrate must be at least one level's raw rate"),
    ],
)
def test_cli_bad_levels_are_one_line_exit_2_and_write_nothing(
    audio_run, tmp_path, capsys, option, message
):
    root, run = audio_run
    archive = tmp_path / "bad.vqz"
    capsys.readouterr()
    assert main(["compress", str(run), str(root), "--out", str(archive), *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vqvae compress: error: ") and message in err[0]
    assert not archive.exists() and not (tmp_path / "bad.vqz.json").exists()


def test_cli_levels_on_a_model_without_residual_levels_exit_2(tmp_path, capsys):
    root = write_tone_clips(tmp_path / "recordings")
    run = tmp_path / "flat"
    flat = [o for o in TINY if "quantizer.kind" not in o and "levels" not in o]
    flat = [o for o in flat if "dropout" not in o]
    assert main(["train", "--data", f"fsdd:{root}", "--out", str(run), "--steps", "2", *flat]) == 0
    prior = ["prior.dim=16", "prior.heads=2", "prior.layers=1", "prior_train.batch_size=4"]
    assert main(["train-prior", str(run), "--steps", "1", *prior]) == 0
    capsys.readouterr()
    archive = tmp_path / "x.vqz"
    assert main(["compress", str(run), str(root), "--out", str(archive), "--levels", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--levels applies to a residual quantizer" in err[0]
    assert not archive.exists()


def test_evaluate_reports_each_depth(audio_run):
    _, run = audio_run
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    for k in (1, 2, 3):
        assert {f"levels_{k}_snr_db", f"levels_{k}_lsd_db"} <= set(metrics)
        assert metrics[f"levels_{k}_bitrate_bps"] == pytest.approx(500 * k * 4)
    for name in ("snr_db", "lsd_db", "stoi", "pesq_nb"):  # full depth: the model's own figures
        if name in metrics:  # (stoi, pesq_nb: with the speech extra)
            assert metrics[f"levels_3_{name}"] == pytest.approx(metrics[name]), name
    nll = [metrics[f"levels_{k}_prior_nll_bits_per_second"] for k in (1, 2, 3)]
    assert 0 < nll[0] < nll[1] < nll[2]
    assert nll[2] == pytest.approx(metrics["prior_nll_bits_per_second"], rel=1e-5)
