"""Shared fixtures. Tests run on CPU by default; TORCH_DEVICE=cuda selects a GPU and the
`gpu` marker skips CUDA-only checks where none is present."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def pytest_configure(config):
    # One torch thread for the whole suite: the models are tiny, so more threads only
    # contend with Ray actors and subprocesses on a 2-core CI machine.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # torch-free packages can still be tested
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def device() -> str:
    return os.environ.get("TORCH_DEVICE", "cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Every module starts with one torch thread (a scorer or latency run in an earlier
    module may have changed it): tiny models run fastest on one, and two threads on a
    loaded 2-core machine spin."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ray_session():
    """A local 2-CPU Ray for the tests of one module (Tune trials, actors)."""
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
