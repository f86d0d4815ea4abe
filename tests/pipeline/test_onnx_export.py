"""ONNX export (``vqvae export``): the graphs' indices and outputs against PyTorch's, on a
trained model, with free batch (and audio time) axes; the quantizers' export path against
their forward; ties; refusals."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_image_model

from vqvae.cli.main import main
from vqvae.errors import VQVAEError
from vqvae.quantizers import (
    FSQ,
    CosineVectorQuantizer,
    EMAVectorQuantizer,
    LowDimQuantizer,
    QuantizerConfig,
    ResidualVectorQuantizer,
    VectorQuantizer,
    nearest_code,
)
from vqvae.quantizers.core import nearest_index_graph

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the quantizers' export path (no onnx needed) -------------------------------------------
def _trained(q, z):
    """``q`` after two training steps on ``z`` (k-means init, EMA), in eval mode."""
    q.train()
    q(z)
    q(z)
    return q.eval()


QUANTIZERS = {
    "ema": lambda: EMAVectorQuantizer(32, 8),
    "vq": lambda: VectorQuantizer(32, 8),
    "cosine": lambda: CosineVectorQuantizer(32, 8),
    "lowdim": lambda: LowDimQuantizer(8, EMAVectorQuantizer(32, 3)),
    "residual": lambda: ResidualVectorQuantizer([EMAVectorQuantizer(32, 8) for _ in range(2)]),
    "fsq": lambda: FSQ((4, 4, 2), 8),
}


@pytest.mark.parametrize("kind", sorted(QUANTIZERS))
def test_export_path_matches_forward(kind):
    torch.manual_seed(0)
    z = torch.randn(6, 8, 5, 5)
    q = _trained(QUANTIZERS[kind](), z)
    fresh = torch.randn(4, 8, 5, 5)
    with torch.no_grad():
        out = q(fresh)
        indices = q.export_indices(fresh)
        assert torch.equal(indices, out.indices)
        assert torch.equal(q.export_lookup(indices), q.lookup(indices))


def test_graph_search_against_numpy_and_ties():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(300, 16)).astype(np.float32)
    codebook = rng.normal(size=(64, 16)).astype(np.float32)
    codebook[40] = codebook[7]  # an exact duplicate: every tie between them goes to 7
    z[:5] = codebook[7]
    # float64 reference, independent of both searches
    d = ((z[:, None, :].astype(np.float64) - codebook[None].astype(np.float64)) ** 2).sum(-1)
    want = d.argmin(1)
    got = nearest_index_graph(torch.from_numpy(z), torch.from_numpy(codebook)).numpy()
    np.testing.assert_array_equal(got, want)
    assert (got != 40).all() and (got[:5] == 7).all()
    kernel = nearest_code(torch.from_numpy(z), torch.from_numpy(codebook))[0].numpy()
    np.testing.assert_array_equal(got, kernel)


# --- ONNX graphs run by onnxruntime --------------------------------------------------------
ort = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the export extra (onnxscript) is not installed")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny VQ-VAE trained on the built-in digits (8×8 -> 4×4 codes) and its export."""
    root = tmp_path_factory.mktemp("export")
    run, out = root / "run", root / "onnx"
    args = ["train", "--data", "digits", "--out", str(run), "--steps", "60"]
    settings = [*tiny_image_model(codebook_size=16), "train.batch_size=32", "train.log_every=20"]
    assert main([*args, *settings]) == 0
    assert main(["export", str(run), "--out", str(out)]) == 0
    return run, out


def test_image_graphs_match_pytorch_on_test_split(exported):
    from vqvae.pipeline.run import RunDir
    from vqvae.pipeline.stages import family_of

    run, out = exported
    config, spec = RunDir(run).read_config()
    family = family_of(config)
    model = family.load_model(RunDir(run))
    images = family.inputs(family.load_data(spec, config.model).test)  # (300, 1, 8, 8)
    encoder, decoder = _session(out / "encoder.onnx"), _session(out / "decoder.onnx")
    for batch in (images[:1], images[1:8], images):  # the batch axis is free
        indices = encoder.run(None, {"input": batch})[0]
        (want,) = family.encode(model, batch)
        np.testing.assert_array_equal(indices, want)
        decoded = decoder.run(None, {"indices": indices})[0]
        np.testing.assert_allclose(decoded, family.decode(model, [want]), rtol=0, atol=1e-4)
    info = json.loads((out / "export.json").read_text())
    assert info["encoder"]["input"]["shape"] == ["batch", 1, 8, 8]
    assert info["decoder"]["input"] == {
        "name": "indices",
        "dtype": "int64",
        "shape": ["batch", 4, 4],
    }
    assert info["codebook_size"] == 16


def test_audio_graphs_keep_batch_and_time_free(tmp_path):
    from vqvae.models import AudioVQVAE, AudioVQVAEConfig
    from vqvae.pipeline.export import export_onnx

    torch.manual_seed(0)
    config = AudioVQVAEConfig(
        downsample=16, hidden=16, res_blocks=1, length=1024, window=512, stft_sizes=(128,),
        mel_fft=128, quantizer=QuantizerConfig(codebook_size=32, dim=8),
    )  # fmt: skip
    model = AudioVQVAE(config)
    model.train()
    model(torch.randn(4, 1, 512) * 0.3)  # k-means places the codes among real encoder outputs
    model.eval()
    export_onnx(model, tmp_path)
    encoder, decoder = _session(tmp_path / "encoder.onnx"), _session(tmp_path / "decoder.onnx")
    for shape in ((3, 1, 1024), (1, 1, 256)):
        x = torch.randn(*shape) * 0.3
        indices = encoder.run(None, {"input": x.numpy()})[0]
        # An untrained encoder's outputs lie close together far from 0: near-ties are likely
        z = model.encoder_output(x).detach().movedim(1, -1).reshape(-1, 8)
        _equal_but_near_ties(z, model.quantizer.codebook, indices, model.encode(x))
        out = decoder.run(None, {"indices": indices})[0]
        want = model.decode_indices(torch.from_numpy(indices)).numpy()
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-4)
        assert out.shape == shape


def _equal_but_near_ties(z, codebook, got, want):
    """``got`` == ``want`` except where the two codes' squared distances to z differ by less
    than float32 rounding of the score terms (``nearest_index_graph``'s documented rule)."""
    got, want = torch.as_tensor(got).flatten(), torch.as_tensor(want).flatten()
    z64, c64 = z.double(), codebook.double()
    d = torch.cdist(z64, c64) ** 2  # (N, K)
    rows = torch.nonzero(got != want).flatten()
    gap = (d[rows, got[rows]] - d[rows, want[rows]]).abs()
    scale = z64[rows].pow(2).sum(1) + c64.pow(2).sum(1).max()
    assert (gap <= 1e-6 * scale).all(), (gap, scale)
    assert len(rows) <= 0.05 * len(got)


def test_refuses_models_without_export_hooks(tmp_path):
    from vqvae.models import VQVAE2, VQVAE2Config
    from vqvae.pipeline.export import export_onnx

    model = VQVAE2(VQVAE2Config(in_channels=1, image_size=16))
    with pytest.raises(VQVAEError, match="VQVAE2 cannot be exported"):
        export_onnx(model, tmp_path / "out", what="RUN")
    assert not (tmp_path / "out").exists()


def test_refuses_a_graph_whose_batch_was_fixed(tmp_path):
    """A model that reads the batch size as a Python number cannot serve other batches."""
    from helpers import tiny_vqvae

    from vqvae.pipeline.export import export_onnx

    model = tiny_vqvae().eval()
    plain = model.encoder_output
    model.encoder_output = lambda x: plain(x).reshape(len(x), *plain(x).shape[1:])
    with pytest.raises(VQVAEError, match="fixed axes"):
        export_onnx(model, tmp_path)
    assert not (tmp_path / "encoder.onnx").exists()


def test_cli_export_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and len(err.strip().splitlines()) == 1
