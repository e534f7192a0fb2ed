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
    deadline = time.monotonic() + 30
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert session_processes(session) == []
