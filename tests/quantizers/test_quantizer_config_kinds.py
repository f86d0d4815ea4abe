"""Every ``kind`` builds through QuantizerConfig with its options; bad options raise one-line
ConfigErrors naming ``model.quantizer.X``; a kind registered from outside the package builds
like the shipped ones."""

import pytest
import torch

from vqvae.errors import ConfigError
from vqvae.quantizers import (
    BSQ,
    FSQ,
    LFQ,
    QUANTIZERS,
    CosineVectorQuantizer,
    EMAVectorQuantizer,
    LowDimQuantizer,
    Quantizer,
    QuantizerConfig,
    QuantizerOutput,
    ResidualVectorQuantizer,
    SimVQ,
    VectorQuantizer,
    build_quantizer,
)


@pytest.mark.parametrize(
    "options, cls",
    [
        ({"kind": "vq"}, VectorQuantizer),
        ({"kind": "ema"}, EMAVectorQuantizer),
        ({"kind": "cosine"}, CosineVectorQuantizer),
        ({"kind": "residual", "levels": 3}, ResidualVectorQuantizer),
        ({"kind": "fsq", "codebook_size": 240}, FSQ),
        ({"kind": "ema", "lookup_dim": 8}, LowDimQuantizer),
        ({"kind": "vq", "gradient": "rotation"}, VectorQuantizer),
        ({"kind": "lfq"}, LFQ),
        ({"kind": "bsq"}, BSQ),
        ({"kind": "simvq"}, SimVQ),
    ],
)
def test_every_kind_builds_and_quantizes(options, cls):
    cfg = QuantizerConfig(codebook_size=options.pop("codebook_size", 32), dim=16, **options)
    q = build_quantizer(cfg)
    assert isinstance(q, cls)
    assert q.codebook_size == cfg.codebook_size and q.dim == 16
    out = q.eval()(torch.randn(2, 16, 3, 3))
    assert out.quantized.shape == (2, 16, 3, 3)


def test_options_reach_the_modules():
    q = build_quantizer(QuantizerConfig(kind="residual", levels=3, lookup_dim=4, decay=0.9))
    assert isinstance(q, LowDimQuantizer) and q.inner.dim == 4 and q.index_levels == 3
    assert all(isinstance(level, EMAVectorQuantizer) for level in q.inner.levels)
    assert {level.decay for level in q.inner.levels} == {0.9}
    q = build_quantizer(QuantizerConfig(kind="cosine", gradient="rotation", kmeans_init=False))
    assert q.gradient == "rotation" and bool(q.initialized)
    q = build_quantizer(QuantizerConfig(kind="residual", gradient="rotation"))
    assert q.gradient == "rotation"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"codebook_size": 1}, "model.quantizer.codebook_size must be at least 2"),
        ({"dim": 0}, "model.quantizer.dim must be at least 1"),
        ({"beta": -1.0}, "model.quantizer.beta must be >= 0"),
        ({"decay": 1.0}, r"model.quantizer.decay must be in \(0, 1\)"),
        ({"usage_decay": 1.0}, r"model.quantizer.usage_decay must be in \[0, 1\)"),
        ({"dead_code_threshold": -0.1}, "model.quantizer.dead_code_threshold must be >= 0"),
        ({"lookup_dim": -2}, "model.quantizer.lookup_dim must be >= 0"),
        ({"kind": "residual", "levels": 0}, "model.quantizer.levels must be at least 1"),
        ({"kind": "fsq", "codebook_size": 600}, "model.quantizer.codebook_size = 600 has no FSQ"),
    ],
)
def test_bad_options_raise_config_errors_naming_them(options, message):
    with pytest.raises(ConfigError, match=message) as err:
        QuantizerConfig(**options)
    assert "\n" not in str(err.value)


def test_overrides_reach_the_new_options_with_type_checks():
    from vqvae.pipeline.run import resolve_config

    cfg = resolve_config(
        None,
        [
            "model.quantizer.kind=fsq",
            "model.quantizer.fsq_levels=[8, 8, 8]",
            "model.quantizer.codebook_size=512",
        ],
    )
    assert cfg.model.quantizer.fsq_levels == (8, 8, 8)
    with pytest.raises(ConfigError, match="model.quantizer.kind: unknown quantizer 'gumbel'"):
        resolve_config(None, ["model.quantizer.kind=gumbel"])
    with pytest.raises(ConfigError, match="model.quantizer.gradient: expected one of"):
        resolve_config(None, ["model.quantizer.gradient=gumbel"])


def test_an_unknown_kind_is_refused_listing_the_known_ones():
    with pytest.raises(ConfigError) as err:
        QuantizerConfig(kind="gumbel")
    known = "vq, ema, cosine, residual, fsq, lfq, bsq, simvq"
    assert str(err.value) == f"model.quantizer.kind: unknown quantizer 'gumbel'; known: {known}"
    with pytest.raises(ConfigError, match="model.quantizer.kind"):
        QuantizerConfig(kind=["ema"])  # a list from a config file: refused, not a TypeError


class Sign(Quantizer):
    """A toy quantizer: the sign of every channel (2 codes)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim, self.codebook_size = dim, 2

    def forward(self, z):
        zero = z.new_zeros(())
        return QuantizerOutput(z.sign(), (z[:, 0] > 0).long(), zero, zero, torch.zeros(2))


@pytest.fixture
def toy_kind():
    QUANTIZERS.register("sign", lambda config: Sign(config.dim))
    yield "sign"
    QUANTIZERS.unregister("sign")


def test_a_registered_kind_builds_through_the_config(toy_kind):
    q = build_quantizer(QuantizerConfig(kind=toy_kind, dim=5))
    assert isinstance(q, Sign) and q.dim == 5
    z = torch.randn(3, 5, 4)
    assert torch.equal(q(z).quantized, z.sign())
    # lookup_dim wraps any kind: the toy is built in the search space, inside the projections
    q = build_quantizer(QuantizerConfig(kind=toy_kind, dim=5, lookup_dim=2))
    assert isinstance(q, LowDimQuantizer) and isinstance(q.inner, Sign) and q.inner.dim == 2
    assert q(torch.randn(3, 5, 4)).quantized.shape == (3, 5, 4)


def test_an_unregistered_kind_is_gone(toy_kind):
    QUANTIZERS.unregister(toy_kind)
    with pytest.raises(ConfigError, match="unknown quantizer 'sign'"):
        QuantizerConfig(kind=toy_kind)
    with pytest.raises(ValueError, match="already registered"):
        QUANTIZERS.register("ema", lambda config: Sign(config.dim))
