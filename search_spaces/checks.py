"""Checks of settings fields, shared by the ``__post_init__`` of every settings class, so
that one rule gives one message everywhere."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["check_ints", "check_known_fields"]


def check_ints(owner: str, settings: Any, lows: Mapping[str, int]) -> None:
    """Raises ValueError ``"<owner>: '<name>' must be an integer >= <low>, got <value>"`` for
    the first field ``name`` of `settings` (in the order of `lows`) that is not an integer at
    least ``lows[name]``. Booleans are not integers here."""
    for name, low in lows.items():
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{owner}: '{name}' must be an integer >= {low}, got {value!r}")


def check_known_fields(cls: Any, data: Mapping[str, Any], *, source: str, what: str) -> None:
    """Raises ValueError ``"<source>: unknown <what> [names]; expected a subset of [...]"``
    when ``data`` has keys that are not fields of the dataclass ``cls`` (a file written by
    another version, a typo)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown {what} {unknown}; expected a subset of "
                         f"{sorted(names)}")
