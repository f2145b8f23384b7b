"""Configs as plain values and back: dataclasses <-> dicts (JSON/YAML-able), and ``config.yml`` files.

``to_plain`` turns dataclasses into dicts, tuples into lists and Paths into str; ``from_plain`` rebuilds
the typed dataclass from such a dict using its type hints (nested dataclasses, tuples, Paths), so a
run's ``config.yml`` reads back into the config it was written from.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ovs3d.errors import InputError

T = TypeVar("T")
CONFIG_FILE = "config.yml"


def to_plain(value: Any) -> Any:
    """``value`` with dataclasses turned into dicts (recursively), tuples into lists, Paths into str and
    dict keys into str; anything else is returned as is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _typed(hint: Any, value: Any) -> Any:
    """``value`` (plain) as type ``hint``: dataclasses rebuilt, lists of tuple fields made tuples, str -> Path."""
    if value is None:
        return None
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_plain(hint, value)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _typed(options[0], value) if len(options) == 1 else value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if hint is Path:
        return Path(value)
    return value


def from_plain(cls: type[T], values: dict[str, Any]) -> T:
    """The dataclass ``cls`` from ``to_plain`` output; unknown keys raise ValueError, missing keys keep
    their defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return cls(**{name: _typed(hints[name], value) for name, value in values.items()})


def config_yaml(config: Any) -> str:
    """The YAML text of a config (``to_plain``, fields in declaration order)."""
    return yaml.safe_dump(to_plain(config), sort_keys=False)


def read_config(path: str | Path, cls: type[T]) -> T:
    """The config of type ``cls`` stored in the YAML file ``path`` (a run's ``config.yml``)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
        return from_plain(cls, values or {})
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise InputError(path, f"cannot read it as a {cls.__name__} ({exc})",
                         "restore the file from the run, or rerun the stage") from exc


def check_bounds(config: Any, stage: str, at_least: dict[str, float] | None = None,
                 above: dict[str, float] | None = None, at_most: dict[str, float] | None = None) -> None:
    """InputError naming the flag ``--<stage>.<field>`` when a field of ``config`` is below its minimum
    (``at_least``), not above its bound (``above``) or above its maximum (``at_most``): bad values fail
    when the command is parsed, not after the stages before them."""
    rules = [(at_least or {}, lambda v, b: v >= b, "at least"), (above or {}, lambda v, b: v > b, "above"),
             (at_most or {}, lambda v, b: v <= b, "at most")]
    for bounds, ok, words in rules:
        for name, bound in bounds.items():
            value = getattr(config, name)
            if not ok(value, bound):
                flag = f"--{stage}.{name.replace('_', '-')}"
                raise InputError(None, f"{flag} must be {words} {bound:g} (got {value})", f"pass {flag} {words} {bound:g}")


def check_all(config: Any) -> None:
    """Call ``check()`` on ``config`` and on every dataclass nested in it that has one."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return
    if hasattr(config, "check"):
        config.check()
    for f in dataclasses.fields(config):
        check_all(getattr(config, f.name))
