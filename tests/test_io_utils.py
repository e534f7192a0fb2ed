"""Atomic output (automoe.io_utils): a writer killed mid-way leaves a recognisable temporary
folder that the next writer of the same target removes, and never touches a live one's."""

from __future__ import annotations

import os
import subprocess
import sys

from automoe.io_utils import atomic_dir, sweep_stale_dirs


def test_the_next_writer_sweeps_a_killed_writers_folder_but_not_a_live_ones(tmp_path):
    target = tmp_path / "data"
    # a writer that was SIGKILLed while writing: its folder and its (now dead) pid
    code = ("import os, signal, sys\n"
            "sys.path.insert(0, os.getcwd())\n"
            "from automoe.io_utils import atomic_dir\n"
            f"with atomic_dir({str(target)!r}) as tmp:\n"
            "    (tmp / 'half.bin').write_bytes(b'x' * 1000)\n"
            "    print(tmp, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -9
    stale = tmp_path / os.path.basename(done.stdout.strip())
    assert stale.is_dir() and stale.name.startswith(".data.tmp-")
    live = tmp_path / f".data.tmp-{os.getpid()}-abc"  # this process is alive
    live.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "ok.txt").write_text("done")
    assert (target / "ok.txt").read_text() == "done"
    assert not stale.exists() and live.is_dir()
    assert sweep_stale_dirs(target) == []
