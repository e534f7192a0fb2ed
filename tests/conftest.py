"""Shared test infrastructure. Tests run on CPU; the `gpu` marker skips the CUDA-only
check (bf16 training) where no GPU is present.

- One torch thread: set before every test's setup (`pytest_runtest_setup`), so the fixtures
  of any scope it builds and the test itself run on one thread, whatever an earlier test
  (a scorer, a latency run) left. Subprocesses a test spawns set their own.
- One Ray session for the whole suite (`ray_session`), started by the first test that asks
  for it; code under test joins it instead of starting its own.
- A test that takes a ``space_name`` argument runs once per shipped search space.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

try:
    import torch
except ImportError:  # torch-free packages can still be tested
    torch = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # The models are tiny: more threads only contend with Ray actors and subprocesses on a
    # 2-core CI machine.
    if torch is not None:
        torch.set_num_threads(1)


def pytest_generate_tests(metafunc):
    if "space_name" in metafunc.fixturenames:
        from search_spaces import available_spaces

        metafunc.parametrize("space_name", available_spaces())


def pytest_collection_modifyitems(config, items):
    if torch is not None and torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def ray_session():
    """The suite's local Ray: 3 logical CPUs (a 2-actor pool plus one more actor; Tune
    trials of 1 CPU). Our actors are the job, so they are not niced (as `automoe search`)."""
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
