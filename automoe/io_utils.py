"""Atomic file output: write to a temporary file in the target folder, then rename, so a
crash or a kill never leaves a half-written file where a good one (or none) was; and the
file hash that identifies a checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_path", "atomic_dir",
           "sweep_stale_dirs", "atomic_write_csv", "read_json", "read_csv", "file_sha256"]


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success renames it onto `path`.

    Use for writers that want a filename (torch.save, safetensors, DataFrame.to_csv).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=False) + "\n")


@contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside `path`; on success it replaces `path` as a whole.

    Raises FileExistsError up front if `path` exists and `overwrite` is False. The folder is
    named ``.<name>.tmp-<pid>-<random>``, so one left by a killed writer is recognisable and
    the next writer of the same `path` removes it (`sweep_stale_dirs`).
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (pass overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_dirs(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale_dirs(target: str | os.PathLike) -> list[Path]:
    """Removes the temporary folders of `atomic_dir` writers of `target` that died (their
    pid is gone) and a leftover ``.<name>.old`` backup; returns what was removed."""
    target = Path(target)
    removed = []
    for tmp in target.parent.glob(f".{target.name}.tmp-*-*"):
        pid = tmp.name[len(f".{target.name}.tmp-"):].split("-", 1)[0]
        if tmp.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    backup = target.with_name(f".{target.name}.old")
    if backup.is_dir() and target.exists():
        shutil.rmtree(backup, ignore_errors=True)
        removed.append(backup)
    return removed


def atomic_write_csv(frame: Any, path: str | os.PathLike, *,
                     float_format: str | None = "%.10g") -> Path:
    """Writes a pandas DataFrame to `path` as CSV (no index) through a temporary file."""
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format=float_format)
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; ValueError naming the file when it is not UTF-8 JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (a binary file?)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


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
