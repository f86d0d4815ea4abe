"""The data-scheme registry: one declaration per spec scheme, looked up by load_data and
load_audio, and a data package whose modules import each other without a cycle."""

from __future__ import annotations

import ast
import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vqvae.data
from vqvae.data import (
    SCHEMES,
    DataError,
    ImageSet,
    Scheme,
    default_model_kind,
    load_audio,
    load_data,
    register_scheme,
    scheme_of,
    spec_forms,
    spec_help,
)
from vqvae.data.audio import AudioSet, is_audio_spec

DATA_DIR = Path(vqvae.data.__file__).parent
IMAGE_FORMS = (
    "digits",
    "mnist:DIR",
    "fashion-mnist:DIR",
    "folder:DIR",
    "npz:FILE",
    "npy:FILE",
    "cifar:DIR",
)
AUDIO_FORMS = ("fsdd:DIR", "wav-folder:DIR")


@contextlib.contextmanager
def registered(scheme: Scheme):
    """``scheme`` in SCHEMES for the duration of a ``with`` block, as a plug-in would add it."""
    register_scheme(scheme)
    try:
        yield scheme
    finally:
        SCHEMES.unregister(scheme.name)


@pytest.fixture
def toy_scheme():
    """A ``toy:N`` image scheme (N grey 4x4 images, labels i % 2) registered for one test; the
    calls its loader received."""
    calls = []

    def load_toy(path: Path, **options):
        calls.append((path, options))
        n = int(path.name)
        images = np.linspace(0, 1, n * 16, dtype=np.float32).reshape(n, 1, 4, 4)
        labels = np.arange(n) % 2
        part = ImageSet(images=images, labels=labels, num_classes=2)
        return part, ImageSet(images=images[:1], labels=labels[:1], num_classes=2)

    with registered(Scheme("toy", "N", load_toy)):
        yield calls


def test_registered_scheme_is_loadable(toy_scheme):
    data = load_data("toy:5")
    assert toy_scheme == [(Path("5"), {"image_size": None, "channels": None})]
    assert data.spec == "toy:5" and len(data.train) == 5 and len(data.test) == 1
    assert (data.channels, data.height, data.width) == (1, 4, 4)
    assert data.train.labels.tolist() == [0, 1, 0, 1, 0]
    # The resize and channel conversion of load_data apply to every scheme alike.
    data = load_data("toy:3", image_size=8, channels=3)
    assert data.train.images.shape == (3, 3, 8, 8) and data.test.images.shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(data.train.images[:, 0], data.train.images[:, 2])
    assert toy_scheme[-1][1] == {"image_size": 8, "channels": 3}
    # It is listed in help and errors while registered.
    assert spec_forms()[-1] == "toy:N" and "toy:N" in spec_help()
    with pytest.raises(DataError, match="toy:N"):
        load_data("toy")
    assert default_model_kind("toy:3") is None


def test_a_test_scheme_is_gone_afterwards():
    with registered(Scheme("toy", "N", lambda path: None)):
        assert scheme_of("toy:1").form == "toy:N"
    assert "toy" not in SCHEMES and spec_forms() == (*IMAGE_FORMS, *AUDIO_FORMS)
    with pytest.raises(DataError, match="unknown data spec"):
        load_data("toy:1")


def test_a_name_is_registered_once(toy_scheme):
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register_scheme(Scheme("toy", "N", lambda path: None))


def test_registered_audio_scheme_selects_its_model():
    def load_tone(path: Path, *, sample_rate: int, length: int, normalize: bool):
        waves = np.zeros((2, length), np.float32)
        part = AudioSet(waves, np.full(2, length), labels=None, num_classes=None)
        return part, part

    with registered(Scheme("tone", None, load_tone, modality="audio", model_kind="audio")):
        data = load_audio("tone", length=16)
        assert data.train.waveforms.shape == (2, 16) and data.sample_rate == 8000
        assert default_model_kind("tone") == "audio" and is_audio_spec("tone")
        assert spec_help().endswith(
            "or audio: fsdd:DIR (the Free Spoken Digit Dataset) or wav-folder:DIR (WAV files) "
            "or tone"
        )


@pytest.mark.parametrize(
    "spec",
    ["imagenet:/x", "cifar:", "mnist", "fsdd", "wav-folder:", "digits:", "digits:/x", "", ":x"],
)
def test_unknown_spec_lists_every_form(spec):
    with pytest.raises(DataError, match="unknown data spec") as info:
        scheme_of(spec)
    message = str(info.value)
    assert repr(spec) in message
    for form in (*IMAGE_FORMS, *AUDIO_FORMS):
        assert form in message
    # load_data and load_audio give the same message.
    for load in (load_data, load_audio):
        with pytest.raises(DataError) as again:
            load(spec)
        assert str(again.value) == message


def test_scheme_of_known_specs():
    assert scheme_of("digits").form == "digits" and not scheme_of("digits").needs_arg
    mnist = scheme_of("mnist:~/data")
    assert (mnist.name, mnist.form, mnist.modality, mnist.model_kind) == (
        "mnist",
        "mnist:DIR",
        "images",
        None,
    )
    assert scheme_of("wav-folder:a:b").name == "wav-folder"  # the path may hold colons
    assert [scheme_of(f.replace("DIR", "d").replace("FILE", "f")).form for f in IMAGE_FORMS] == [
        *IMAGE_FORMS
    ]


def test_data_of_the_other_modality_is_refused():
    with pytest.raises(DataError, match=r"fsdd:x: fsdd:DIR holds audio, not images"):
        load_data("fsdd:x")
    with pytest.raises(DataError, match=r"mnist:x: mnist:DIR holds images, not audio \(audio "):
        load_audio("mnist:x")


def test_default_model_kind():
    for spec in ("fsdd:/data/fsdd", "wav-folder:clips", "fsdd"):
        assert default_model_kind(spec) == "audio" and is_audio_spec(spec)
    for spec in ("digits", "mnist:x", "folder:y", "npz:z.npz", "cifar:c", "bogus:x", ""):
        assert default_model_kind(spec) is None and not is_audio_spec(spec)
    # The rule is the scheme's declaration, so it agrees with the modality of every scheme.
    for name, scheme in SCHEMES.items():
        assert (default_model_kind(f"{name}:x") == "audio") == (scheme.modality == "audio")


def test_spec_help_lists_every_form():
    text = spec_help()
    assert text == (
        "data spec: digits, mnist:DIR, fashion-mnist:DIR, folder:DIR, npz:FILE, npy:FILE, "
        "cifar:DIR (a CIFAR-10/100 python-batches folder or .tar.gz), or audio: fsdd:DIR (the "
        "Free Spoken Digit Dataset) or wav-folder:DIR (WAV files)"
    )
    assert spec_forms("audio") == AUDIO_FORMS and spec_forms("images") == IMAGE_FORMS


# --- the package's import structure -------------------------------------------------------------
MODULES = sorted(p.stem for p in DATA_DIR.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_without_torch(module):
    """A fresh interpreter imports ``vqvae.data.<module>`` first: no cycle bites whichever module
    comes first, and no module loads torch (``vqvae --help`` lists the data specs)."""
    code = (
        f"import sys, vqvae.data.{module}; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "from vqvae.data import spec_forms; print(len(spec_forms()))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(len(IMAGE_FORMS) + len(AUDIO_FORMS))


def _data_imports(tree: ast.Module) -> tuple[set[str], list[int]]:
    """(modules of the package imported at the top level, lines of function-level imports of
    package modules)."""
    top, nested = set(), []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("vqvae.data")
        ):
            names = (
                [a.name for a in node.names]
                if node.module == "vqvae.data"
                else [node.module.removeprefix("vqvae.data.")]
            )
        elif isinstance(node, ast.Import):
            names = [
                a.name.removeprefix("vqvae.data.")
                for a in node.names
                if a.name.startswith("vqvae.data.")
            ]
        else:
            continue
        if node in tree.body:
            top |= {n for n in names if n in MODULES}
        elif names:
            nested.append(node.lineno)
    return top, nested


def test_import_graph_has_no_cycle_and_no_function_level_workaround():
    graph = {}
    for module in MODULES:
        top, nested = _data_imports(ast.parse((DATA_DIR / f"{module}.py").read_text()))
        assert not nested, f"{module}.py imports package modules inside functions: {nested}"
        graph[module] = top
    assert graph["schemes"] == set() and graph["common"] == set()  # the bottom of the layer
    done: list[str] = []
    while graph:  # peel off modules whose imports are all done; a cycle leaves some behind
        ready = [m for m, deps in graph.items() if deps <= set(done)]
        assert ready, f"import cycle among {sorted(graph)}"
        done += ready
        for m in ready:
            del graph[m]
