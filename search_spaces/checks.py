"""Checks of settings fields, shared by the ``__post_init__`` of every settings class, so
that one rule gives one message everywhere."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["check_ints"]


def check_ints(owner: str, settings: Any, lows: Mapping[str, int]) -> None:
    """Raises ValueError ``"<owner>: '<name>' must be an integer >= <low>, got <value>"`` for
    the first field ``name`` of `settings` (in the order of `lows`) that is not an integer at
    least ``lows[name]``. Booleans are not integers here."""
    for name, low in lows.items():
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{owner}: '{name}' must be an integer >= {low}, got {value!r}")
