"""One small class for every registry of the project: model families, priors, quantizers and
data schemes are each a ``Registry`` mapping a ``kind`` string to what implements it.

Adding a kind is one ``register`` call (usually a decorator next to the class); code that
needs a kind asks ``get(kind)`` once, and an unknown kind is a ``ConfigError`` that lists the
known ones. Torch-free, so that configs and the CLI can use registries without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from vqvae.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """``kind -> entry``; ``what`` names the kind of thing in error messages ("model family")."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, kind: str, entry: T | None = None, *, replace: bool = False):
        """``register(kind, entry)``, or ``@register(kind)`` as a class decorator. A kind is
        registered once unless ``replace`` (tests swapping in a stand-in)."""

        def add(entry: T) -> T:
            if kind in self._entries and not replace and self._entries[kind] is not entry:
                raise ValueError(f"{self.what} {kind!r} is already registered")
            self._entries[kind] = entry
            return entry

        return add if entry is None else add(entry)

    def unregister(self, kind: str) -> None:
        self._entries.pop(kind, None)

    def get(self, kind: str, where: str = "kind") -> T:
        try:
            return self._entries[kind]
        except (KeyError, TypeError):  # TypeError: an unhashable kind from a config file
            raise ConfigError(
                f"{where}: unknown {self.what} {kind!r}; known: {', '.join(self._entries)}"
            ) from None

    def find(self, test: Callable[[T], bool]) -> T | None:
        """The first entry (in registration order) for which ``test`` holds."""
        return next((e for e in self._entries.values() if test(e)), None)

    def __contains__(self, kind: object) -> bool:
        return kind in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self):
        return self._entries.items()

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
