"""The one check of a ``--device`` value, shared by every command that takes one, the
default device, and the one way to run a block on a given number of torch threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["check_device", "default_device", "torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Runs the block with torch's intra-op threads set to `threads` and restores the
    previous count however the block ends. None leaves the count alone and does not import
    torch (a torch-free caller never pays its import)."""
    if threads is None:
        yield
        return
    import torch  # lazily: the light commands import this module

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_device(name: str | None, *, flag: str = "--device") -> str | None:
    """`name` when torch can run on it here (None passes: the command's default); else a
    ValueError naming the flag and what is accepted."""
    if name is None:
        return None
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{flag} {name!r}: not a device (expected cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{flag} {name!r}: only cpu and cuda devices are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {name!r}: torch sees no CUDA device here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {name!r}: only {torch.cuda.device_count()} CUDA "
                             "device(s) here")
    return name


def default_device() -> str:
    """"cuda" when torch sees a GPU here, else "cpu" (imports torch: call it when running,
    not while building the command line)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
