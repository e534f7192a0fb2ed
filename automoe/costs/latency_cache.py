"""A persistent latency cache keyed by (device fingerprint, subnet key, protocol).

One JSON object per line (JSONL), appended under an exclusive ``flock`` and fsync'ed per
measurement, so several processes (two searches, two `automoe latency measure`) can share a
file and a crash loses at most the line being written (a broken last line is skipped on
load and cut off by the next append). One record per key: `put` re-reads what others
appended under the same lock and keeps a record already there (the first measurement
wins), and `measure` re-reads the file before measuring, so a process reuses what another
measured meanwhile. The lookup key contains the fingerprint's content hash, and the
stored fingerprint is re-hashed on load rather than trusted, so a measurement taken on another
device, torch version, thread count or dtype is never returned.
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from automoe.costs.latency import (
    LatencyProtocol,
    LatencyResult,
    fingerprint_id,
    measure_latency,
    protocol_fingerprint,
)
from supernet.contracts import SubnetModel

__all__ = ["LatencyCache"]

Key = tuple[str, str, str]  # (fingerprint id, subnet key, protocol key)


class LatencyCache:
    """Latency measurements on disk; ``get``/``put``/``measure``.

    Args:
        path: the JSONL file (created on first ``put``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._entries: dict[Key, LatencyResult] = {}
        self._offset = 0  # bytes of the file read so far (whole lines only)
        self._lines = 0  # lines read so far (for error messages)
        self.refresh()

    def refresh(self) -> None:
        """Reads the records other processes appended since the last read."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # writers hold LOCK_EX: only whole lines here
            self._read_new(fd)
        finally:
            os.close(fd)

    def _read_new(self, fd: int) -> None:
        """Parses the whole lines after ``_offset`` (the caller holds a lock on ``fd``). A
        last line without its newline is a writer killed mid-append: skipped (the next
        `put` cuts it off); an unparsable line is an error unless it is the last one."""
        size = os.fstat(fd).st_size
        if size <= self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1
        try:
            lines = data[:end].decode("utf-8").splitlines()
        except UnicodeDecodeError as err:
            bad = self._lines + data[:err.start].count(b"\n") + 1
            raise ValueError(f"{self.path}:{bad}: not UTF-8 text (a latency cache is JSON "
                             "lines; another file at this path?)") from None
        partial = data[end:].strip()
        for n, line in enumerate(lines, self._lines + 1):
            if not line.strip():
                continue
            try:
                result = LatencyResult.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                if n == self._lines + len(lines) and not partial:  # an interrupted append
                    warnings.warn(f"{self.path}:{n}: skipping a broken last line ({err})",
                                  stacklevel=3)
                    continue
                raise ValueError(f"{self.path}:{n}: not a latency record ({err})") from None
            self._entries.setdefault(self._key_of(result), result)  # the first record wins
        self._lines += len(lines)
        self._offset += end
        if partial:
            warnings.warn(f"{self.path}:{self._lines + 1}: skipping a broken last line "
                          "(an interrupted append)", stacklevel=3)

    @staticmethod
    def _key_of(result: LatencyResult) -> Key:
        if result.subnet_key is None:
            raise ValueError("LatencyCache: a cached result needs a subnet_key")
        return (fingerprint_id(result.fingerprint), result.subnet_key, result.protocol_key)

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, subnet_key: str, protocol: LatencyProtocol, fingerprint: dict[str, Any] | None = None
    ) -> LatencyResult | None:
        """The cached result for this subnet and protocol on ``fingerprint`` (default: this
        machine's fingerprint for the protocol's device, dtype, threads and runtime), or None."""
        fp = fingerprint or protocol_fingerprint(protocol)
        return self._entries.get((fingerprint_id(fp), subnet_key, protocol.key()))

    def put(self, result: LatencyResult) -> LatencyResult:
        """Appends ``result`` to the file unless a record with its key is there already
        (another process measured the same subnet meanwhile); returns the stored record,
        so every user of the file sees one measurement per key."""
        key = self._key_of(result)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(result.to_dict(), separators=(",", ":")) + "\n").encode("utf-8")
        # Several processes append to one file: each line is one write() under an exclusive
        # lock, so lines never interleave whatever their length, and the check for a record
        # of the same key and the append are one step.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with warnings.catch_warnings():  # a killed writer's partial line: cut off below
                warnings.simplefilter("ignore")
                self._read_new(fd)
            if key in self._entries:
                return self._entries[key]
            size = os.fstat(fd).st_size
            if size > self._offset:  # a writer killed mid-append left a partial line
                os.ftruncate(fd, self._offset)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as err:  # a full disk: no partial line, no empty file left
                os.ftruncate(fd, self._offset)
                if self._offset == 0:
                    self.path.unlink(missing_ok=True)
                raise OSError(err.errno, f"{self.path}: {err.strerror}") from None
            self._offset += len(line)
            self._lines += 1
        finally:
            os.close(fd)  # also releases the lock
        self._entries[key] = result
        return result

    def measure(
        self,
        subnet_key: str,
        protocol: LatencyProtocol,
        build_model: Callable[[], SubnetModel],
    ) -> tuple[LatencyResult, bool]:
        """The cached result, or a new measurement of ``build_model()`` (stored).

        Returns ``(result, was_cached)``.
        """
        self.refresh()
        hit = self.get(subnet_key, protocol)
        if hit is not None:
            return hit, True
        result = measure_latency(build_model(), protocol, subnet_key=subnet_key)
        stored = self.put(result)
        return stored, stored is not result
