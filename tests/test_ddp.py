"""Data-parallel training on the CPU: 2 gloo processes give the weights of 1 process with
the same global batch (2 accumulation steps), dropout included, and unused supernet slices
(layers and experts a subnet does not use, experts that got no tokens on one rank) cause
neither an error nor a skipped sync."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from train_fakes import FakeSpace, FakeSupernet, ListBatcher, make_batches

from supernet.training.checkpoint import load_checkpoint, plain
from supernet.training.config import TrainConfig
from supernet.training.distributed import DistInfo, sync_gradients
from supernet.training.loop import LAST_CHECKPOINT, train
from supernet.training.sampling import SamplingRule, probe_subnets
from supernet.training.schedule import LRSchedule

pytestmark = pytest.mark.slow

SPACE = FakeSpace()
IDENTITY = {"kind": "fake-supernet", "space": plain(SPACE.largest())}


def _config(update_freq: int) -> TrainConfig:
    return TrainConfig(max_updates=6, schedule=LRSchedule("cosine", max_lr=1e-2, warmup_updates=2,
                                                          total_updates=20),
                       sampling=SamplingRule("sandwich", 1), seed=3, update_freq=update_freq,
                       clip_norm=1.0, validate_every=3, save_every=6)


def _job(run_dir, rank: int, world_size: int, update_freq: int):
    with torch.random.fork_rng():
        torch.manual_seed(0 if rank == 0 else 1000 + rank)  # other ranks start different:
        model = FakeSupernet(dropout=0.2)                   # train() broadcasts rank 0's
    batches = make_batches(12, 3, seed=1)
    valid = make_batches(4, 5, seed=9)[rank::world_size]
    return train(model, _config(update_freq), run_dir=run_dir,
                 train_batches=ListBatcher(batches, rank, world_size), valid_batches=valid,
                 identity=IDENTITY, probes=probe_subnets(SPACE, seed=3), space=SPACE,
                 info=DistInfo(rank, world_size, rank), progress=False)


def _worker(rank: int, world_size: int, port: int, run_dir: str) -> None:
    torch.set_num_threads(1)  # 2 ranks on 2 cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        _job(run_dir, rank, world_size, update_freq=1)
        _check_sync_of_missing_gradients(rank, world_size)
    finally:
        dist.destroy_process_group()


def _check_sync_of_missing_gradients(rank: int, world_size: int) -> None:
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(3)]
    params[0].grad = torch.full((3,), float(rank + 1))  # every rank: summed
    if rank == 1:
        params[1].grad = torch.ones(3)  # one rank only: zeros elsewhere
    sync_gradients(params, DistInfo(rank, world_size, rank))  # params[2]: nobody, stays None
    assert torch.equal(params[0].grad, torch.full((3,), 3.0))
    assert torch.equal(params[1].grad, torch.ones(3))
    assert params[2].grad is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(tmp_path):
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2,
                       start_method="spawn")
    single = _job(tmp_path / "single", 0, 1, update_freq=2)
    a = load_checkpoint(tmp_path / "ddp" / LAST_CHECKPOINT)
    b = load_checkpoint(tmp_path / "single" / LAST_CHECKPOINT)
    assert a["update"] == b["update"] == 6 and a["world_size"] == 2
    for name, t in b["model"].items():
        torch.testing.assert_close(a["model"][name], t, rtol=1e-4, atol=1e-6)
    rows = [(tmp_path / d / "valid_log.csv").read_text().splitlines() for d in ("ddp", "single")]
    assert len(rows[0]) == len(rows[1]) == 1 + 2 * len(single.last_valid)
    for ra, rb in zip(rows[0][1:], rows[1][1:], strict=True):
        fa, fb = ra.split(","), rb.split(",")
        assert fa[:3] == fb[:3]  # update, probe, subnet key
        assert float(fa[3]) == pytest.approx(float(fb[3]), rel=1e-4)
