"""CSV training logs that are rewritten atomically and cut back on resume.

A log keeps its rows in memory and rewrites the whole file through a temporary file and a
rename, so a kill never leaves a torn line. On resume, rows newer than the checkpoint
(written between the last checkpoint and the kill) are dropped, so the resumed run's log is
identical to an uninterrupted run's. Every value in these logs is deterministic (no wall
times), which is what lets the resume tests compare the files byte for byte.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search_spaces.files import atomic_write_text

__all__ = ["CsvLog"]


class CsvLog:
    """Rows of a CSV file with a fixed header and an integer ``update`` column."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]) -> None:
        if "update" not in columns:
            raise ValueError(f"{path}: a log needs an 'update' column, got {list(columns)}")
        self.path = Path(path)
        self.columns = list(columns)
        self.rows: list[dict[str, str]] = []

    def restore(self, up_to_update: int) -> None:
        """Reads the existing file, keeping rows with ``update <= up_to_update``."""
        self.rows = []
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != self.columns:
                raise ValueError(f"{self.path}: header {reader.fieldnames} differs from the "
                                 f"expected {self.columns}")
            self.rows = [row for row in reader if int(row["update"]) <= up_to_update]

    def append(self, row: Mapping[str, Any]) -> None:
        missing = [c for c in self.columns if c not in row]
        if missing:
            raise ValueError(f"{self.path}: row lacks column(s) {missing}")
        self.rows.append({c: _fmt(row[c]) for c in self.columns})

    def flush(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # shortest string that round-trips exactly
    return str(value)
