"""A local Ray that dies with the process that started it.

`ray.init(address="local")` starts a GCS server, a raylet and their agents. If the driver
is killed (SIGKILL, the OOM killer, a session's end), the raylet goes but its dashboard and
runtime-env agents can stay behind forever (ray-project/ray#39092 and later reports).
`start_local_ray` therefore also starts a watchdog: a small process that reads a pipe only
the driver holds open, and when the pipe closes (the driver has exited, however) kills
every process of the driver's Ray session (their command lines name its session dir). On
systems without ``/proc`` the watchdog is not started.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["start_local_ray", "session_processes"]

_WATCHDOGS: list[int] = []  # write ends of the pipes the watchdogs wait on (kept open)


def start_local_ray(**init_kwargs: Any) -> None:
    """``ray.init(address="local", **init_kwargs)`` and a watchdog for its session."""
    import ray

    context = ray.init(address="local", **init_kwargs)
    session = (getattr(context, "address_info", None) or {}).get("session_dir")
    if session and Path("/proc").is_dir():
        read, write = os.pipe()  # both ends non-inheritable: Ray's children never hold them
        subprocess.Popen([sys.executable, "-m", "automoe.ray_local", session], stdin=read,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        os.close(read)
        _WATCHDOGS.append(write)


def session_processes(session_dir: str) -> list[int]:
    """PIDs of the processes whose command line names `session_dir` (this one excluded)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if re.search(re.escape(session_dir.encode()) + rb"(?:[/\x00 ]|$)", cmdline):
            out.append(int(entry.name))
    return out


def _watch(session_dir: str) -> None:
    """Waits for the driver's end of the pipe to close, then kills the session's processes
    (a few rounds: a dying raylet may still start an agent)."""
    sys.stdin.buffer.read()  # EOF: the driver has exited
    time.sleep(1.0)  # Ray's own shutdown goes first when the driver exits normally
    for _ in range(5):
        pids = session_processes(session_dir)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


if __name__ == "__main__":
    _watch(sys.argv[1])
