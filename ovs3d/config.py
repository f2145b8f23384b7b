"""Plain (JSON/YAML-able) values of configs and results: dataclasses -> dicts, tuples -> lists, Paths -> str."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


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
