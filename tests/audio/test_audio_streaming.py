"""Causal streaming (``model.causal = true``): chunk by chunk gives the offline codes and the
offline output (to float rounding) for chunks of one hop, seven hops, irregular chunks and the
whole clip; changing a sample never changes a code before its hop, nor a code an output sample
before its span; non-causal models are refused and keep their layers; the codec and
``vqvae compress/decompress --chunk`` make the same archive and the same audio."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from vqvae.errors import ConfigError
from vqvae.models import AudioVQVAE, AudioVQVAEConfig
from vqvae.models.audio_stream import decode_in_chunks, encode_in_chunks
from vqvae.nets.conv1d import CausalConv1d, CausalConvTranspose1d
from vqvae.quantizers import QuantizerConfig

pytestmark = pytest.mark.usefixtures("one_thread")

HOP, CODES = 16, 48  # 768-sample clips


def speech_like(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Voiced-sounding test signals: a few harmonics of a gliding pitch, plus noise (B, 1, T)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 8000
    f0 = 100 + 150 * torch.rand(batch, 1, generator=g)
    phase = 2 * torch.pi * f0 * t * (1 + 0.5 * t)
    x = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.3
    return (x + 0.02 * torch.randn(batch, length, generator=g))[:, None]


def causal_model(causal: bool = True) -> AudioVQVAE:
    """The fsdd configuration's network at half width; codebook from k-means on its own
    encoder outputs, so that the codes are varied (near-ties possible) as in a trained model."""
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=512, dim=64, dead_code_threshold=0.0)
    config = AudioVQVAEConfig(
        causal=causal, length=HOP * CODES, window=0, downsample=HOP, hidden=64, res_blocks=2,
        quantizer=q,
    )  # fmt: skip
    model = AudioVQVAE(config)
    model.train()
    model(speech_like(16, HOP * CODES, seed=1))  # k-means initialises the codebook
    return model.eval()


@pytest.fixture(scope="module")
def model() -> AudioVQVAE:
    return causal_model()


@pytest.mark.parametrize("hops", [1, 7, CODES])
def test_chunked_is_the_offline_pass(model, hops):
    x = speech_like(3, HOP * CODES)
    codes = model.encode(x)  # (3, 48)
    assert len(codes.unique()) > 20  # varied codes: equality below is not trivial
    out = model.decode_indices(codes)
    chunked = encode_in_chunks(model, x, hops)
    assert torch.equal(chunked, codes)
    decoded = decode_in_chunks(model, codes, hops)
    assert decoded.shape == out.shape == x.shape
    assert (decoded - out).abs().max() <= 1e-5


def test_chunks_of_varying_size_and_mono_input(model):
    x = speech_like(2, HOP * CODES, seed=3)
    codes, out = model.encode(x), model.reconstruct(x)
    encoder, decoder = model.stream_encoder(), model.stream_decoder()
    got_codes, got_out, start = [], [], 0
    for hops in (1, 3, 7, 2, 11, 24):  # 48 hops in all
        chunk = x[:, 0, start * HOP : (start + hops) * HOP]  # (B, n·hop): mono may drop C
        c = encoder.push(chunk)
        assert c.shape == (2, hops)
        got_codes.append(c)
        got_out.append(decoder.push(c))
        start += hops
    assert torch.equal(torch.cat(got_codes, -1), codes)
    assert (torch.cat(got_out, -1) - out).abs().max() <= 1e-5


def test_streaming_with_a_residual_quantizer(model):
    torch.manual_seed(0)
    q = QuantizerConfig(kind="residual", codebook_size=16, dim=8, levels=3, kmeans_init=False)
    m = AudioVQVAE(replace(model.config, hidden=32, res_blocks=1, quantizer=q)).eval()
    x = speech_like(2, HOP * CODES)
    codes = m.encode(x)  # (2, 3, 48)
    assert torch.equal(encode_in_chunks(m, x, 5), codes)
    assert (decode_in_chunks(m, codes, 5) - m.decode_indices(codes)).abs().max() <= 1e-5


def test_a_code_depends_on_no_later_sample(model):
    x = speech_like(1, HOP * CODES)
    z, codes = model.encoder_output(x), model.encode(x)
    for i in (0, 37, HOP * 20 - 1, HOP * 20, HOP * CODES - 1):
        y = x.clone()
        y[..., i] += 0.5
        frame = i // HOP
        z2 = model.encoder_output(y)
        assert torch.equal(z2[..., :frame], z[..., :frame])  # exactly: not one bit moves
        assert not torch.equal(z2[..., frame], z[..., frame])  # its own frame does change
        assert torch.equal(model.encode(y)[:, :frame], codes[:, :frame])


def test_an_output_sample_depends_on_no_later_code(model):
    codes = model.encode(speech_like(1, HOP * CODES))
    out = model.decode_indices(codes)
    for j in (0, 1, 20, CODES - 1):
        other = codes.clone()
        other[0, j] = (other[0, j] + 1) % 512
        out2 = model.decode_indices(other)
        assert torch.equal(out2[..., : j * HOP], out[..., : j * HOP])
        assert not torch.equal(
            out2[..., j * HOP : (j + 1) * HOP], out[..., j * HOP : (j + 1) * HOP]
        )


def test_latency_is_one_hop_without_lookahead(model):
    assert model.latency_samples == HOP
    x = speech_like(1, HOP * CODES)
    # the first n codes need the first n hops only: encoding them alone gives the same codes
    for n in (1, 5, 30):
        assert torch.equal(model.encode(x[..., : n * HOP]), model.encode(x)[:, :n])


def test_causal_and_centred_models_share_parameter_names_and_shapes(model):
    centred = causal_model(causal=False)
    shapes = {k: v.shape for k, v in centred.state_dict().items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    # the centred network has no causal layer, the causal one no centred convolution
    kinds = (CausalConv1d, CausalConvTranspose1d)
    assert not any(isinstance(m, kinds) for m in centred.modules())
    for m in model.modules():
        if type(m) in (nn.Conv1d, nn.ConvTranspose1d):
            assert m.kernel_size == (1,)  # only pointwise convolutions stay plain


def test_a_non_causal_model_does_not_stream():
    centred = causal_model(causal=False)
    assert centred.latency_samples is None
    for start in (centred.stream_encoder, centred.stream_decoder):
        with pytest.raises(ConfigError, match=r"model\.causal = true"):
            start()


def test_bad_chunks_are_refused(model):
    encoder, decoder = model.stream_encoder(), model.stream_decoder()
    with pytest.raises(ValueError, match="multiple of 16"):
        encoder.push(torch.zeros(1, 1, 24))  # not a whole number of hops
    with pytest.raises(ValueError, match=">= 1 code"):
        decoder.push(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ConfigError, match="--chunk must be an integer >= 1"):
        encode_in_chunks(model, torch.zeros(1, 1, 64), 0)


def test_save_and_load_keep_the_causal_model(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = AudioVQVAE.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.causal
    x = speech_like(1, HOP * CODES)
    assert torch.equal(encode_in_chunks(loaded, x, 7), model.encode(x))


# --- the codec and the command line ------------------------------------------------------------
def test_codec_chunked_codes_and_outputs_are_the_offline_ones(model):
    pytest.importorskip("constriction")
    from vqvae.codec import Codec
    from vqvae.pipeline.families import FAMILIES
    from vqvae.priors import TransformerPrior, TransformerPriorConfig

    prior = TransformerPrior(
        TransformerPriorConfig(
            codebook_size=512, dim=16, heads=2, layers=1, layout="1d", max_length=CODES
        )
    ).eval()
    codec = Codec(FAMILIES.get("audio"), model, [prior], b"causal!!", batch=2)
    inputs = speech_like(5, HOP * CODES)[:, 0].numpy()
    codes = codec.encode(inputs)
    for hops in (1, 7):
        assert np.array_equal(codec.encode(inputs, chunk=hops)[0], codes[0])
    data = codec.compress_codes(codes)
    offline = codec.decompress_archive(data).outputs
    chunked = codec.decompress_archive(data, chunk=3).outputs
    assert chunked.shape == offline.shape == inputs.shape
    assert np.abs(chunked - offline).max() <= 1e-5


def _wav_name(i: int) -> str:
    return f"{i % 2}_ann_{i // 2}.wav"  # two digits, recordings 0-5 (FSDD: 0-4 are the test split)


def _wav_folder(root, n: int = 12):
    from scipy.io import wavfile

    root.mkdir()
    for i in range(n):
        x = speech_like(1, 700 + 6 * i, seed=i)[0, 0].numpy()
        wavfile.write(root / _wav_name(i), 8000, (x * 32767).astype(np.int16))
    return root


def test_cli_chunked_compress_and_decompress(tmp_path, capsys):
    pytest.importorskip("constriction")
    from scipy.io import wavfile

    from vqvae.cli.main import main

    root = _wav_folder(tmp_path / "recordings")
    run = tmp_path / "causal"
    tiny = ["model.causal=true", "model.length=768", "model.window=256", "model.hidden=16",
            "model.res_blocks=1", "model.stft_sizes=[128, 64]", "model.mel_fft=128",
            "model.mel_bands=16", "model.quantizer.codebook_size=8", "model.quantizer.dim=4",
            "train.batch_size=4", "train.checkpoint_every=0"]  # fmt: skip
    assert main(["train", "--data", f"fsdd:{root}", "--out", str(run), "--steps", "3", *tiny]) == 0
    prior = ["prior.dim=16", "prior.heads=2", "prior.layers=1", "prior_train.batch_size=4"]
    assert main(["train-prior", str(run), "--steps", "2", *prior]) == 0
    archives = {}
    for chunk in (None, 1, 7):
        archives[chunk] = tmp_path / f"clips-{chunk}.vqz"
        extra = [] if chunk is None else ["--chunk", str(chunk)]
        argv = ["compress", str(run), str(root), "--out", str(archives[chunk]), *extra]
        assert main(argv) == 0
    data = archives[None].read_bytes()
    assert archives[1].read_bytes() == data and archives[7].read_bytes() == data
    for chunk in (None, 2):
        extra = [] if chunk is None else ["--chunk", str(chunk)]
        out = tmp_path / f"wavs-{chunk}"
        assert main(["decompress", str(archives[None]), "--run", str(run), "--out", str(out),
                     *extra]) == 0  # fmt: skip
    for i in range(12):
        _, offline = wavfile.read(tmp_path / "wavs-None" / _wav_name(i))
        _, chunked = wavfile.read(tmp_path / "wavs-2" / _wav_name(i))
        assert len(chunked) == len(offline) == 700 + 6 * i
        # float outputs within 1e-5, written as 16-bit: at most one step apart
        assert np.abs(chunked.astype(np.int32) - offline.astype(np.int32)).max() <= 1
    capsys.readouterr()
    bad = tmp_path / "bad.vqz"
    for value in ("0", "-3"):
        assert main(["compress", str(run), str(root), "--out", str(bad), "--chunk", value]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"vqvae compress: error: --chunk must be >= 1 (hops), got {value}"
        assert main(["decompress", str(archives[None]), "--run", str(run), "--out",
                     str(tmp_path / "o"), "--chunk", value]) == 2  # fmt: skip
        assert "--chunk must be >= 1" in capsys.readouterr().err
    assert not bad.exists() and not (tmp_path / "o").exists()


def test_cli_chunk_on_a_non_causal_model_is_one_line_exit_2(tmp_path, capsys):
    pytest.importorskip("constriction")
    from vqvae.cli.main import main

    root = _wav_folder(tmp_path / "recordings", n=1)
    out = tmp_path / "a.vqz"
    assert main(["compress", "--pretrained", "fsdd", str(root), "--out", str(out),
                 "--chunk", "1"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--chunk needs a causal audio model" in err
    assert not out.exists()
