"""The evaluator seam on a real (tiny) Ray cluster: Ray == serial, actor death is survived,
latency runs alone, scorer errors surface. One Ray session for the whole module."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from automoe.search.evaluators import RayEvaluator, Score, SerialEvaluator
from search_spaces.config import SubnetConfig

ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/ on path

CRASH_DIM, ERROR_DIM = 13, 17  # encoder_embed_dim values that make the probe misbehave


class ProbeScorer:
    """A deterministic scorer over a shared weight matrix (numpy, so actors start without
    importing torch): the result depends on the object-store payload and the config."""

    def __init__(self, shared: dict[str, np.ndarray]) -> None:
        self.w = shared["w"]  # in an actor: a read-only zero-copy view of the object store

    def score(self, config: SubnetConfig) -> Score:
        start = time.time()
        if config.encoder_embed_dim == CRASH_DIM:
            os._exit(1)  # a hard crash: the actor process dies
        if config.encoder_embed_dim == ERROR_DIM:
            raise ValueError("probe: bad config")
        a, b = config.encoder_embed_dim, config.decoder_embed_dim
        loss = float((self.w[:a, :b] @ np.ones(b, dtype=np.float32)).sum())
        time.sleep(0.02)  # long enough that both actors hold work at once
        return Score({"loss": loss, "width": float(a)},
                     {"t0": repr(start), "t1": repr(time.time()),
                      "store_view": str(not self.w.flags.writeable)})

    def latency(self, config: SubnetConfig) -> Score:
        start = time.time()
        time.sleep(0.01)
        return Score({"latency_ms": float(config.decoder_embed_dim)},
                     {"l0": repr(start), "l1": repr(time.time())})


def make_config(enc: int, dec: int) -> SubnetConfig:
    return SubnetConfig(
        encoder_embed_dim=enc, decoder_embed_dim=dec, qkv_dim=8,
        encoder_expert_dims=((16,),), encoder_heads=(2,), encoder_top_k=(1,),
        decoder_expert_dims=((16,),), decoder_heads=(2,), decoder_cross_heads=(2,),
        decoder_ende_attn=(1,), decoder_top_k=(1,),
    )


SHARED = {"w": np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)}
CONFIGS = [make_config(8 + 4 * i, 64 - 6 * i) for i in range(8)]  # even: never 13 or 17


@pytest.fixture(scope="module")
def pool(ray_session):
    # the suite's Ray has 3 logical CPUs: this 2-actor pool plus one more actor in the
    # start-up test
    with RayEvaluator(ProbeScorer, SHARED, workers=2, latency=True, max_retries=1) as evaluator:
        yield evaluator


def _oracle_loss(c: SubnetConfig) -> float:
    return float(SHARED["w"][: c.encoder_embed_dim, : c.decoder_embed_dim].astype(np.float64).sum())


def _deterministic(evals):
    return [(e.key, dict(e.metrics)) for e in evals]


def test_ray_matches_serial_and_oracle(pool):
    serial = SerialEvaluator(ProbeScorer, SHARED, threads=1, latency=True).evaluate(CONFIGS)
    remote = pool.evaluate(CONFIGS)
    assert _deterministic(remote) == _deterministic(serial)
    assert [e.key for e in remote] == [c.key() for c in CONFIGS]
    for c, e in zip(CONFIGS, remote, strict=True):
        assert e.metrics["loss"] == pytest.approx(_oracle_loss(c), rel=1e-5)
    assert all(r.endswith("nice=0") for r in pool.ready)  # not Ray's default niceness 15
    scorers = {e.worker for e in remote}
    assert scorers == {"w0", "w1"}  # the pool shares the work
    # Actors read the weights in place from the object store (read-only, zero-copy views).
    assert {e.info["store_view"] for e in remote} == {"True"}
    assert {e.info["store_view"] for e in serial} == {"False"}


def test_latency_phase_is_exclusive(pool):
    evals = pool.evaluate(CONFIGS)
    # CPU: one actor measures every latency, and only after all scoring finished.
    assert {e.info["latency_worker"] for e in evals} == {pool.names[0]}
    last_score_end = max(float(e.info["t1"]) for e in evals)
    first_latency = min(float(e.info["l0"]) for e in evals)
    assert first_latency >= last_score_end
    spans = sorted((float(e.info["l0"]), float(e.info["l1"])) for e in evals)
    assert all(b[0] >= a[1] for a, b in zip(spans[:-1], spans[1:], strict=True))  # never two at once


def test_killed_actor_is_replaced_and_work_requeued(pool):
    expected = _deterministic(SerialEvaluator(ProbeScorer, SHARED, latency=True).evaluate(CONFIGS))
    killed: list[str] = []

    def kill_once(phase, index, evaluation):
        if not killed and phase == "score":
            victim = pool.names.index(evaluation.worker)
            killed.append(pool.names[victim])
            ray.kill(pool.actors[victim], no_restart=True)  # it still holds a queued task

    before = pool.replacements
    evals = pool.evaluate(CONFIGS, on_result=kill_once)
    assert _deterministic(evals) == expected
    assert pool.replacements == before + 1
    assert killed[0] not in pool.names  # a fresh actor took the slot
    assert len(ray.get([a.ready.remote() for a in pool.actors])) == 2


def test_scorer_exception_names_candidate(pool):
    bad = make_config(ERROR_DIM, 32)
    with pytest.raises(RuntimeError, match=bad.key()):
        pool.evaluate([CONFIGS[0], bad])


def test_candidate_that_kills_every_worker_fails_after_retries(pool):
    bad = make_config(CRASH_DIM, 32)
    before = pool.replacements
    with pytest.raises(RuntimeError, match=f"{bad.key()}.*died 2 times"):
        pool.evaluate([bad])
    assert pool.replacements == before + 2
    assert pool.evaluate(CONFIGS[:2])[0].metrics["loss"] == pytest.approx(_oracle_loss(CONFIGS[0]), rel=1e-5)


def _broken_factory(shared):
    raise FileNotFoundError("probe: /no/such/data on this node")


def test_actor_that_cannot_build_its_scorer_fails_at_start(pool):
    with pytest.raises(RuntimeError, match="failed to start.*no/such/data"):
        RayEvaluator(_broken_factory, SHARED, workers=1, start_timeout=120)
