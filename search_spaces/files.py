"""Atomic file output, the one implementation every package writes through.

A writer gets a temporary file (or folder) beside the target, fills it, and only then is it
renamed onto the target, so a crash or a kill never leaves a half-written file where a good
one (or none) was. Everything written is flushed to disk (fsync) before the rename: the
rename must never publish data that is not on disk yet. It lives in the lowest package, so
`supernet`, `evolution` and `automoe` all use it without importing upwards; it needs
neither torch nor pandas (`atomic_write_csv` only calls the frame's ``to_csv``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["read_json", "naming", "MAX_JSON_BYTES", "strict_json", "atomic_path", "atomic_write_text", "atomic_write_json", "atomic_write_csv",
           "atomic_dir", "sweep_stale_dirs"]


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_tree(root: Path) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            file = Path(folder, name)
            if file.is_file() and not file.is_symlink():
                _fsync(file)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success fsyncs it and renames it onto `path`.

    Use for writers that want a filename (torch.save, safetensors, DataFrame.to_csv). The
    temporary file (``.<name>.<random><suffix or .tmp>``) is removed whatever happens.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with naming(target):
            yield tmp_path
            _fsync(tmp_path)
            os.chmod(tmp_path, _mode(0o666))  # mkstemp's 0600 would make the file private
            os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` as UTF-8, exactly as given (no newline translation)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


MAX_JSON_BYTES = 256 * 2**20  # no file the tool writes comes near this


def read_json(path: str | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The one reader of every JSON file the tool reads back (settings, manifests, run
    records). ValueError naming the file, in one line, when it is missing, larger than
    `max_bytes`, not UTF-8, not JSON, or nested too deep for the parser (a hostile
    ``[[[[...`` would otherwise exhaust the stack)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{path}: {size:,} bytes, more than the {max_bytes:,} a JSON "
                             "file of this tool may hold")
        text = path.read_bytes().decode("utf-8")
        return json.loads(text)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (a binary file?)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read") from None


def strict_json(data: Any) -> Any:
    """`data` with every non-finite float (NaN, inf: an undefined statistic) as None, so
    that it serialises to strict JSON (``null``) that every JSON reader accepts."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    return data


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int = 2,
                      strict: bool = True) -> None:
    """Writes `data` as strict JSON: non-finite floats (an undefined statistic) become
    ``null`` (`strict_json`), which every JSON reader accepts. ``strict=False`` keeps them
    as Python's ``NaN``/``Infinity``, for internal state that must read back exactly."""
    text = json.dumps(strict_json(data) if strict else data, indent=indent, sort_keys=False,
                      allow_nan=not strict)
    atomic_write_text(path, text + "\n")


def atomic_write_csv(frame: Any, path: str | os.PathLike, *,
                     float_format: str | None = "%.10g") -> Path:
    """Writes a pandas DataFrame to `path` as CSV (no index) through a temporary file."""
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format=float_format)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside `path`; on success every file in it is fsynced and
    it replaces `path` as a whole.

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
        with naming(target):
            yield tmp
            _fsync_tree(tmp)
            _share_tree(tmp)
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


@contextmanager
def naming(target: Path) -> Iterator[None]:
    """An OSError that names no file (a write() on a full disk: "[Errno 28] No space left on
    device") is raised again naming `target`, the file being written."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or str(target) in str(err):
            raise
        raise OSError(err.errno, f"writing {target}: {err.strerror or err}") from None


def _mode(base: int) -> int:
    """`base` (0o666 for files, 0o777 for folders) under this process's umask: what
    ``open``/``mkdir`` would have created."""
    return base & ~_umask()


def _umask() -> int:
    """The process's umask, read without setting it where Linux says it (setting it, even
    for an instant, would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _share_tree(root: Path) -> None:
    """mkdtemp's folder is 0700 and files written by `atomic_path` inside it are already
    shared; give the folder (and subfolders) the mode ``mkdir`` would have given it."""
    for folder in (root, *(p for p in root.rglob("*") if p.is_dir())):
        os.chmod(folder, _mode(0o777))


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
