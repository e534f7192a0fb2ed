"""automoe.ray_local: a local Ray whose processes die with the driver, even a SIGKILLed one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from automoe.ray_local import session_processes

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")

DRIVER = """
import sys, time
from automoe.ray_local import start_local_ray
import ray
start_local_ray(num_cpus=1, include_dashboard=False, log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
from ray._private.worker import global_worker
print(global_worker.node.get_session_dir_path(), flush=True)
time.sleep(600)
"""


def _gone_within(session: str, seconds: float) -> bool:
    """Whether every process of the Ray session ends within `seconds`."""
    deadline = time.monotonic() + seconds
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    return session_processes(session) == []


def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        driver.stdout.readline()
        session = driver.stdout.readline().strip()
        assert session and session_processes(session), "no Ray process found for the session"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert _gone_within(session, 30.0)


def _descendants(pid: int) -> list[int]:
    """Every live process whose parent chain reaches `pid`."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        out += kids
        frontier = kids
    return out


def _session_of(pids: list[int]) -> str | None:
    import re

    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        found = re.search(r"(/[^\x00 ]*/session_[0-9_-]+\d)", cmdline)
        if found:
            return found.group(1)
    return None


def test_a_killed_ray_tune_command_leaves_no_ray_process_behind(tmp_path):
    """`automoe fidelity` trains its standalone models as Ray Tune trials: SIGKILLed while a
    trial runs, its Ray session (GCS, raylet, dashboard and runtime-env agents) goes too."""
    from search_helpers import make_world

    supernet, data = make_world(tmp_path)
    argv = ["fidelity", str(supernet), "--data", str(data), "--out", str(tmp_path / "study"),
            "--bands", "1", "--per-band", "2", "--dense-per-band", "1", "--seeds", "1",
            "--double", "0", "--pool", "300", "--dev-sentences", "8", "--max-updates", "400",
            "--warmup-updates", "1", "--max-tokens", "256", "--valid-sentences", "8",
            "--report-every", "2", "-q"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(
        [sys.executable, "-c", "import sys; from automoe.cli import main; sys.exit(main())",
         *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    session = None
    try:
        deadline = time.monotonic() + 180
        trial = tmp_path / "study" / "jobs" / "seed0" / "retrain" / "tune"
        while time.monotonic() < deadline and driver.poll() is None:
            session = session or _session_of(_descendants(driver.pid))
            if session and list(trial.glob("trial_*/result.json")):
                break  # a trial is training
            time.sleep(0.5)
        assert session and driver.poll() is None, "no Ray Tune trial started"
        assert session_processes(session)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert _gone_within(session, 30.0)
