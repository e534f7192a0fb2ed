"""File input for the application: the CSV reader whose errors name the file, and the file
hash that identifies a checkpoint. The atomic writers and the JSON reader are
`search_spaces.files` (the one implementation, used by every package), re-exported here."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from search_spaces.files import (
    atomic_dir,
    atomic_path,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    read_json,
    sweep_stale_dirs,
)

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_path", "atomic_dir",
           "sweep_stale_dirs", "atomic_write_csv", "read_json", "read_csv", "file_sha256"]


def read_csv(path: str | os.PathLike, **kwargs: Any) -> Any:
    """A CSV file as a pandas DataFrame (``key`` read as text); ValueError naming the file
    when it is empty, binary or malformed."""
    import pandas as pd

    path = Path(path)
    try:
        return pd.read_csv(path, **{"dtype": {"key": str}, **kwargs})
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty (no header, no rows)") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ValueError(f"{path}: not a readable CSV table "
                         f"({' '.join(str(err).split())[:200]})") from None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
