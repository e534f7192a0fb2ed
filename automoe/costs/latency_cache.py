"""A persistent latency cache keyed by (device fingerprint, subnet key, protocol).

One JSON object per line (JSONL), appended under an exclusive ``flock`` and fsync'ed per
measurement, so several processes (two searches, two `automoe latency collect`) can share a
file and a crash loses at most the line being written (a broken last
line is skipped on load). The lookup key contains the fingerprint's content hash, and the
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

from automoe.costs.latency import LatencyProtocol, LatencyResult, device_fingerprint, fingerprint_id

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
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                result = LatencyResult.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                if n == len(lines):  # an interrupted append
                    warnings.warn(f"{self.path}:{n}: skipping a broken last line ({err})", stacklevel=2)
                    continue
                raise ValueError(f"{self.path}:{n}: not a latency record ({err})") from None
            self._entries[self._key_of(result)] = result

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
        machine's fingerprint for the protocol's device, dtype and threads), or None."""
        fp = fingerprint or device_fingerprint(protocol.device, protocol.dtype, protocol.threads)
        return self._entries.get((fingerprint_id(fp), subnet_key, protocol.key()))

    def put(self, result: LatencyResult) -> None:
        """Stores ``result`` in memory and appends it to the file."""
        key = self._key_of(result)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(result.to_dict(), separators=(",", ":")) + "\n").encode("utf-8")
        # Several processes append to one file: each line is one write() under an exclusive
        # lock, so lines never interleave whatever their length.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)  # also releases the lock
        self._entries[key] = result

    def measure(
        self,
        subnet_key: str,
        protocol: LatencyProtocol,
        build_model: Callable[[], Any],
    ) -> tuple[LatencyResult, bool]:
        """The cached result, or a new measurement of ``build_model()`` (stored).

        Returns ``(result, was_cached)``.
        """
        from automoe.costs.latency import measure_latency

        hit = self.get(subnet_key, protocol)
        if hit is not None:
            return hit, True
        result = measure_latency(build_model(), protocol, subnet_key=subnet_key)
        self.put(result)
        return result, False
