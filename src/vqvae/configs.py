"""Typed configuration: dataclasses checked on the way in.

Every component owns a ``@dataclass`` config with defaults. ``from_dict`` builds one from plain
data (a JSON/TOML/YAML mapping) and rejects unknown keys and wrong types with a message naming
them; ``parse_override`` turns ``section.key=value`` strings into such mappings.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from vqvae.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, checking every key and value type."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(data) - names))  # YAML allows keys such as null or 1
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}"
        )
    values = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from None


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def replace(config: T, where: str = "config", **changes: Any) -> T:
    """A checked copy of ``config`` with ``changes`` applied (the original is never mutated)."""
    merged = to_dict(config)
    merged.update(changes)
    return from_dict(type(config), merged, where)


@dataclasses.dataclass(frozen=True)
class Tagged:
    """Marks a config section whose ``kind`` picks its dataclass from a registry:
    ``prior: Annotated[Any, Tagged(PRIORS, "pixelcnn")]``. The registry's entries carry their
    config dataclass as ``config_class``; a table without ``kind`` gets ``default``. Kinds
    registered later (a plugin, a test) are accepted without touching the annotation."""

    registry: Any  # a vqvae.registry.Registry of classes with a ``config_class``
    default: str

    def parse(self, value: Any, where: str) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            entry = self.registry.get(getattr(value, "kind", None), f"{where}.kind")
            if isinstance(value, entry.config_class):
                return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of settings, got {value!r}")
        entry = self.registry.get(value.get("kind", self.default), f"{where}.kind")
        return from_dict(entry.config_class, value, where)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(hint)
        tag = next((e for e in extras if isinstance(e, Tagged)), None)
        return _check_type(value, base, where) if tag is None else tag.parse(value, where)
    if origin in (typing.Union, types.UnionType):
        tagged = _tagged_option(value, typing.get_args(hint), where)
        if tagged is not None:
            return _check_type(value, tagged, where)
        errors = []
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_name(hint)}, got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{where}: expected one of {', '.join(map(repr, allowed))}, got {value!r}"
            )
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return tuple(_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected none, got {value!r}")
        return None
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of settings, got {value!r}")
        return from_dict(hint, value, where)
    raise TypeError(f"unsupported config type {hint!r} at {where}")  # a bug, not user input


def _tagged_option(value: Any, options: tuple, where: str) -> type | None:
    """A union of dataclasses that each have a ``kind`` field is a tagged union: the value's
    ``kind`` (default: the first option's) picks the dataclass, so errors name its keys."""
    tags = {}
    for option in options:
        if not dataclasses.is_dataclass(option):
            return None
        kind = {f.name: f for f in dataclasses.fields(option)}.get("kind")
        if kind is None or not isinstance(kind.default, str):
            return None
        tags[kind.default] = option
    if isinstance(value, tuple(options)):
        return type(value)
    if not isinstance(value, dict):  # not a table: let the default option say so
        return next(iter(tags.values()))
    tag = value.get("kind", next(iter(tags)))
    if not isinstance(tag, str) or tag not in tags:  # a table as kind is unhashable (fuzzing)
        raise ConfigError(
            f"{where}.kind: expected one of {', '.join(map(repr, tags))}, got {tag!r}"
        )
    return tags[tag]


def _name(hint: Any) -> str:
    return " or ".join(
        "none" if a is type(None) else getattr(a, "__name__", str(a)) for a in typing.get_args(hint)
    )


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) or JSON config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: config must be .toml, .yaml, .yml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: cannot parse: {str(e).splitlines()[0]}") from None
    except Exception as e:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: cannot parse: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.codebook_size=512"`` -> (["model", "codebook_size"], 512).

    The value is parsed as a TOML value when it can be (numbers, booleans, quoted strings,
    lists), ``none`` means None, and anything else is a bare string, so ``recon_loss=bce``
    works without quotes.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key=value")
    if raw.strip().lower() in ("none", "null"):  # TOML has no null; unset an optional key
        return key.split("."), None
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def merge_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of nested ``data`` with each ``a.b=value`` override applied."""
    out = json.loads(json.dumps(data))  # deep copy of plain data; never mutate the caller's
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return out
