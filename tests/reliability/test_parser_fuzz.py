"""Property-based fuzzing of every file parser that reads untrusted bytes: whatever the bytes,
the parser either succeeds or raises its documented error (DataError, CheckpointError,
ConfigError) - never another exception, never a hang, never code execution.

Inputs are random bytes and, more usefully, valid files with random bytes overwritten and cut
short, so the fuzzing reaches past the first header check. (IDX is fuzzed in tests/data.)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_fixtures import batch, py2_pickle
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st

from vqvae import configs
from vqvae.data import DataError, load_codes, load_data, save_codes
from vqvae.data.cifar import restricted_loads
from vqvae.errors import CheckpointError, ConfigError
from vqvae.models import VQVAE, VQVAEConfig
from vqvae.pipeline.run import RunConfig, RunDir
from vqvae.quantizers import QuantizerConfig
from vqvae.serialization import load_weights
from vqvae.training import ShuffledBatches
from vqvae.training.checkpoint import load_checkpoint, restore_rng, save_checkpoint

# A few seconds in CI; set VQVAE_FUZZ_EXAMPLES=5000 for a deeper search.
EXAMPLES = int(os.environ.get("VQVAE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """``valid`` with a few bytes overwritten, then possibly cut short."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut] if draw(st.booleans()) else data)


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, images=rng.integers(0, 256, (6, 4, 4), dtype=np.uint8), labels=np.arange(6))
    return buf.getvalue()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.linspace(0, 1, 3 * 16, dtype=np.float32).reshape(3, 4, 4))
    return buf.getvalue()


NPZ, NPY = _npz_bytes(), _npy_bytes()


def _load_array_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"x.{suffix}"
        path.write_bytes(data)
        with contextlib.suppress(DataError):
            load_data(f"{suffix}:{path}")


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated(NPZ)))
def test_fuzz_npz(data):
    _load_array_bytes(data, "npz")


@FUZZ
@given(st.one_of(st.binary(max_size=200).map(lambda b: b"\x93NUMPY" + b), mutated(NPY)))
def test_fuzz_npy(data):
    _load_array_bytes(data, "npy")


def _codes_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.safetensors"
        save_codes(path, np.arange(32).reshape(2, 4, 4) % 8, np.array([0, 1]), 8, {"split": "t"})
        return path.read_bytes()


CODES = _codes_bytes()


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated(CODES)))
def test_fuzz_codes_file(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.safetensors"
        path.write_bytes(data)
        try:
            codes = load_codes(path)
        except DataError:
            return
        assert codes.indices.min() >= 0 and codes.indices.max() < codes.codebook_size


def _tiny_model() -> VQVAE:
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=4, dim=2)
    return VQVAE(
        VQVAEConfig(
            in_channels=1,
            image_size=4,
            downsample=2,
            hidden=2,
            res_hidden=2,
            res_blocks=0,
            quantizer=q,
        )
    )


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("ckpt")
    model = _tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    model.training_losses((torch.rand(2, 1, 4, 4), None))["loss"].backward()
    optimizer.step()
    state = {"step": 1, "elapsed": 0.0, "batches": {"epoch": 0, "position": 2, "seed": 0}}
    path = save_checkpoint(d, model, optimizer, state)
    return {
        name: (path / name).read_bytes()
        for name in ("model/model.safetensors", "optimizer.safetensors", "trainer.json")
    }


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    which=st.sampled_from(["model/model.safetensors", "optimizer.safetensors", "trainer.json"]),
    data=st.data(),
)
def test_fuzz_checkpoint_files(checkpoint_files, which, data):
    """A checkpoint with one file damaged loads or is refused with CheckpointError."""
    damaged = data.draw(st.one_of(st.binary(max_size=100), mutated(checkpoint_files[which])))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)
        for name, content in checkpoint_files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(damaged if name == which else content)
        model = _tiny_model()
        try:
            if which.startswith("model/"):
                load_weights(model, path / "model")
            else:
                optimizer = torch.optim.AdamW(model.parameters())
                state, extra = load_checkpoint(path, model, optimizer)
                with _rng_kept():  # what fit does next with a loaded checkpoint
                    restore_rng(extra, state.get("rng", {}), torch.device("cpu"))
                    ShuffledBatches((torch.arange(8),), 2).load_state_dict(state["batches"])
        except CheckpointError:
            pass


@contextlib.contextmanager
def _rng_kept():
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


VALID_PICKLE = py2_pickle(batch(2, 0))


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        mutated(VALID_PICKLE),
        mutated(pickle.dumps(batch(2, 1), protocol=5)),
        # A well-formed pickle of some other value: allowed or refused, never run.
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.binary(max_size=8) | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=8,
        ).map(lambda obj: pickle.dumps(obj, protocol=2)),
    )
)
def test_fuzz_restricted_unpickler(data):
    with contextlib.suppress(DataError):
        restricted_loads(data, "fuzz")


# --- configuration -------------------------------------------------------------------------------
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=3),
)
KEYS = st.sampled_from(
    [
        "model",
        "train",
        "prior",
        "quantizer",
        "codebook_size",
        "beta",
        "steps",
        "lr",
        "kind",
        "image_size",
        "downsample",
        "batch_size",
        "minutes",
        "decay",
        "dim",
        "bogus",
        "seed",
    ]
)


@FUZZ
@given(
    st.recursive(
        SCALARS, lambda inner: st.dictionaries(KEYS, inner, max_size=4), max_leaves=10
    ).filter(lambda v: isinstance(v, dict))
)
@example({"model": {"kind": {}}})  # once a TypeError: a table where a kind name belongs
def test_fuzz_config_mapping(raw):
    with contextlib.suppress(ConfigError):
        configs.from_dict(RunConfig, raw, "fuzz")


@FUZZ
@given(suffix=st.sampled_from([".toml", ".json", ".yaml"]), text=st.text(max_size=120))
@example(".yaml", "?")  # once a TypeError: YAML's {null: null} has a key that is not text
def test_fuzz_config_file(suffix, text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"c{suffix}"
        path.write_text(text, encoding="utf-8")
        with contextlib.suppress(ConfigError):
            configs.from_dict(RunConfig, configs.load_file(path), str(path))


@FUZZ
@given(st.text(max_size=40))
def test_fuzz_override(text):
    with contextlib.suppress(ConfigError):
        configs.from_dict(RunConfig, configs.merge_overrides({}, [text]), "fuzz")


# Valid starting points for the round trip: the defaults of each model family and prior kind.
# Candidates this version does not accept (a renamed kind, a moved key) simply drop out.
BASE_CANDIDATES = [
    {},
    *({"model": {"kind": kind}} for kind in ("vqvae", "vae", "audio", "mlp")),
    {"model": {"kind": "vqvae2", "image_size": 32}},
    {"prior": {"kind": "transformer"}},
    {"prior_kind": "transformer"},
]


def _valid_bases() -> list[dict]:
    bases = []
    for raw in BASE_CANDIDATES:
        with contextlib.suppress(ConfigError):
            base = configs.to_dict(configs.from_dict(RunConfig, raw))
            if base not in bases:  # {} and the default model kind are the same config
                bases.append(base)
    return bases


BASES = _valid_bases()


def _leaves(tree: dict, path: tuple = ()) -> list[tuple]:
    """Paths of the settings in a config mapping, ``kind`` tags excepted (they pick the section)."""
    found = []
    for key, value in tree.items():
        if isinstance(value, dict):
            found += _leaves(value, (*path, key))
        elif key != "kind":
            found.append((*path, key))
    return found


def _like(value) -> st.SearchStrategy:
    """Values of the type that ``value`` has (validation decides which are allowed)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.one_of(st.integers(0, 8), st.integers(-(2**40), 2**40))
    if isinstance(value, float):
        # Finite: NaN is not equal to itself; every other double must come back bit for bit.
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(value, str):
        return st.one_of(st.just(value), st.text(max_size=6))
    if isinstance(value, tuple | list) and value:
        return st.lists(_like(value[0]), max_size=4)
    return st.just(value)  # None or an empty list: the type is not known from the value


@st.composite
def run_config_mappings(draw) -> dict:
    """A base config mapping with up to five settings replaced by values of the same type."""
    raw = json.loads(json.dumps(draw(st.sampled_from(BASES))))  # a deep copy
    for path in draw(st.lists(st.sampled_from(_leaves(raw)), max_size=5, unique=True)):
        *parents, key = path
        section = raw
        for name in parents:
            section = section[name]
        section[key] = draw(_like(section[key]))
    return raw


def _typed(value):
    """``value`` with the type of every leaf made part of it (so 1 and 1.0 differ)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


@FUZZ
@given(raw=run_config_mappings(), spec=st.text(max_size=30))
@example(raw={}, spec="mnist:~/data/mnist")
def test_run_config_json_round_trip(raw, spec):
    """What ``RunDir.write_config`` writes, ``read_config`` reads back as an equal config: every
    section, kind and value, with its type (tuples from JSON lists, floats that look like ints),
    and the data spec whatever its characters."""
    try:
        config = configs.from_dict(RunConfig, raw, "fuzz")
    except ConfigError:
        reject()
    with tempfile.TemporaryDirectory() as d:
        run = RunDir(d)
        run.write_config(config, spec)
        again, spec_again = run.read_config()
    assert spec_again == spec
    assert again == config
    assert _typed(configs.to_dict(again)) == _typed(configs.to_dict(config))


def test_round_trip_starts_from_several_families():
    assert len(BASES) >= 4, "most base configs are refused: update BASE_CANDIDATES"
    assert len({b["model"]["kind"] for b in BASES}) >= 3


def test_fuzz_inputs_are_valid_before_mutation():
    """A sanity check of the harness: the valid files above are accepted as they are."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.safetensors").write_bytes(CODES)
        assert len(load_codes(Path(d) / "c.safetensors")) == 2
    assert restricted_loads(VALID_PICKLE, "ok")["data"].shape == (2, 3072)
    for suffix, data in (("npz", NPZ), ("npy", NPY)):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / f"x.{suffix}").write_bytes(data)
            splits = load_data(f"{suffix}:{Path(d) / f'x.{suffix}'}")
            assert len(splits.train) + len(splits.test) in (6, 3)
