"""Names a package imports on first use (PEP 562), so importing it stays light."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["lazy_attribute"]


def lazy_attribute(package: str, exports: Mapping[str, str], name: str) -> Any:
    """``package.name`` imported from the submodule ``exports[name]`` (relative to
    ``package``); what a package's module-level ``__getattr__`` returns. AttributeError for
    a name not in ``exports``."""
    if name not in exports:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
