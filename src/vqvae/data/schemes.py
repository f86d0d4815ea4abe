"""Data specs and the registry of their schemes: the one place that knows which specs exist.

A data spec is ``NAME`` or ``NAME:ARG`` ("digits", "mnist:~/data/mnist", "fsdd:DIR"); ``NAME`` is
the scheme. Each scheme is a ``Scheme`` registered in ``SCHEMES`` by the module that implements
its loader (``digits``, ``idx``, ``images``, ``arrays``, ``cifar``, ``audio``), so adding a source
is one new loader and one ``register_scheme`` call beside it. ``vqvae.data`` imports every loader
module, so the registry is complete whenever this module can be reached; the order of those
imports is the order of the forms in help and error messages.

This module sits at the bottom of the data layer: it imports no other module of the package (and
neither NumPy nor torch), so loaders import it freely and ``vqvae --help`` can list the forms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vqvae.errors import DataError
from vqvae.registry import Registry

Modality = Literal["images", "audio"]

Loader = Callable[..., tuple[Any, Any]]
"""``load(path, **options) -> (train, test)``. ``path`` is the spec's argument as an expanded
``Path`` (None for a scheme without one). Image loaders are passed ``image_size`` and
``channels`` (either may be None) and return two ``ImageSet``; audio loaders are passed
``sample_rate``, ``length`` and ``normalize`` and return two ``AudioSet``. A loader ignores the
options it has no use for (see ``path_only``)."""


@dataclass(frozen=True)
class Scheme:
    """One kind of data spec.

    ``name`` comes before the colon; ``arg`` is the placeholder shown for what comes after it
    ("DIR", "FILE"), or None for a spec that is the name alone ("digits"). ``load`` reads the
    data (see ``Loader``); ``modality`` says what it holds ("images" for ``load_data``, "audio"
    for ``load_audio``); ``model_kind`` is the model family its data selects when the user names
    none (None: the configured family); ``about`` is a few words for the help text.
    """

    name: str
    arg: str | None
    load: Loader
    modality: Modality = "images"
    model_kind: str | None = None
    about: str = ""

    @property
    def form(self) -> str:
        """How the spec is written in help and errors: ``mnist:DIR``, ``digits``."""
        return self.name if self.arg is None else f"{self.name}:{self.arg}"

    @property
    def needs_arg(self) -> bool:
        return self.arg is not None


SCHEMES: Registry[Scheme] = Registry("data scheme")


def register_scheme(scheme: Scheme, *, replace: bool = False) -> Scheme:
    """Add ``scheme`` to ``SCHEMES`` under its name (``SCHEMES.unregister(name)`` removes it)."""
    return SCHEMES.register(scheme.name, scheme, replace=replace)


def path_only(load: Callable[[Path | None], tuple[Any, Any]]) -> Loader:
    """A ``Loader`` from a function of the path alone: for sources whose image size and channels
    are fixed, which ``load_data`` converts afterwards."""

    @functools.wraps(load)
    def loader(path: Path | None, **_options: Any) -> tuple[Any, Any]:
        return load(path)

    return loader


def _schemes(modality: Modality | None = None) -> list[Scheme]:
    return [s for _, s in SCHEMES.items() if modality is None or s.modality == modality]


def spec_forms(modality: Modality | None = None) -> tuple[str, ...]:
    """The forms of every registered scheme (of one ``modality`` if given), in registration
    order: ``("digits", "mnist:DIR", ..., "fsdd:DIR", "wav-folder:DIR")``."""
    return tuple(s.form for s in _schemes(modality))


def spec_help() -> str:
    """The help text of the CLI's ``--data`` option, listing every registered form: image
    specs first, then each other modality ("... or audio: fsdd:DIR (...) or wav-folder:DIR")."""
    groups: dict[str, list[str]] = {}
    for s in _schemes():
        groups.setdefault(s.modality, []).append(f"{s.form} ({s.about})" if s.about else s.form)
    parts = [", ".join(groups.pop("images", []))]
    parts += [f"{modality}: {' or '.join(forms)}" for modality, forms in groups.items()]
    return "data spec: " + ", or ".join(p for p in parts if p)


def parse_spec(spec: str, modality: Modality | None = None) -> tuple[Scheme, Path | None]:
    """``spec``'s scheme and its argument as an expanded path (None for a scheme without one).

    A ``DataError`` names the spec when no scheme matches (listing every registered form), when
    the argument is missing or unexpected ("mnist", "mnist:", "digits:x"), and when the scheme
    holds another ``modality`` than the one asked for.
    """
    name, sep, arg = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    scheme = SCHEMES.get(name) if name in SCHEMES else None
    # "mnist" and "mnist:" lack their argument; "digits:x" has one that digits does not take.
    if scheme is None or (not arg if scheme.needs_arg else sep):
        raise DataError(f"unknown data spec {spec!r}: expected one of {', '.join(spec_forms())}")
    if modality is not None and scheme.modality != modality:
        raise DataError(
            f"{spec}: {scheme.form} holds {scheme.modality}, not {modality} "
            f"({modality} specs: {', '.join(spec_forms(modality))})"
        )
    return scheme, Path(arg).expanduser() if scheme.needs_arg else None


def scheme_of(spec: str) -> Scheme:
    """The registered ``Scheme`` of ``spec`` (a ``DataError`` naming it if there is none)."""
    return parse_spec(spec)[0]


def default_model_kind(spec: str) -> str | None:
    """The model family that the data of ``spec`` selects when the user names none: "audio"
    for ``fsdd:`` and ``wav-folder:``, None for image data (the configured family stays).

    The one place that rule lives. Only the scheme name counts, and a spec no scheme knows gives
    None: loading it reports what is wrong with it.
    """
    name = spec.partition(":")[0] if isinstance(spec, str) else ""
    return SCHEMES.get(name).model_kind if name in SCHEMES else None
