"""Every ``kind`` builds through QuantizerConfig with its options; bad options raise one-line
ConfigErrors naming ``model.quantizer.X``."""

import pytest
import torch

from vqvae.errors import ConfigError
from vqvae.quantizers import (
    FSQ,
    CosineVectorQuantizer,
    EMAVectorQuantizer,
    LowDimQuantizer,
    QuantizerConfig,
    ResidualVectorQuantizer,
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

    cfg, _ = resolve_config(
        None,
        [
            "model.quantizer.kind=fsq",
            "model.quantizer.fsq_levels=[8, 8, 8]",
            "model.quantizer.codebook_size=512",
        ],
    )
    assert cfg.model.quantizer.fsq_levels == (8, 8, 8)
    with pytest.raises(ConfigError, match="model.quantizer.kind: expected one of"):
        resolve_config(None, ["model.quantizer.kind=lfq"])
    with pytest.raises(ConfigError, match="model.quantizer.gradient: expected one of"):
        resolve_config(None, ["model.quantizer.gradient=gumbel"])
