"""The training loop on small stand-in models: learning, exact resume, loss normalisation,
the sandwich rule and refusals. (tests/test_train_e2e.py runs the real SuperTransformer.)"""

from __future__ import annotations

import csv
import math
from dataclasses import replace

import pytest
import torch
from train_fakes import (
    FakePlain,
    FakeSpace,
    FakeSupernet,
    ListBatcher,
    collate,
    make_batches,
    make_config,
    synthetic_pairs,
)

from supernet.training.checkpoint import load_checkpoint, plain
from supernet.training.config import TrainConfig
from supernet.training.loop import BEST_CHECKPOINT, LAST_CHECKPOINT, train
from supernet.training.loss import distillation_kl, label_smoothed_nll
from supernet.training.sampling import SamplingRule, probe_subnets
from supernet.training.schedule import LRSchedule

SPACE = FakeSpace()
IDENTITY = {"kind": "fake-supernet", "space": plain(SPACE.largest()), "vocab_size": 24}
VALID = make_batches(3, 8, seed=99)


def _model(seed: int = 0, dropout: float = 0.1) -> FakeSupernet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FakeSupernet(dropout)


def _config(**kw) -> TrainConfig:
    base = dict(max_updates=6, schedule=LRSchedule("cosine", max_lr=1e-2, warmup_updates=2,
                                                   total_updates=40),
                seed=5, validate_every=2, save_every=3, clip_norm=1.0, load_balance_coef=0.01)
    return TrainConfig(**{**base, **kw})


def _run(tmp, config, *, batches=None, model=None, resume=False, **kw):
    return train(model or _model(), config, run_dir=tmp, resume=resume,
                 train_batches=ListBatcher(batches or make_batches(8, 6, seed=1)),
                 valid_batches=VALID, identity=IDENTITY,
                 probes=probe_subnets(SPACE, seed=config.seed), space=SPACE, progress=False,
                 **kw)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_short_run_lowers_dev_loss_of_every_probe(tmp_path):
    cfg = _config(max_updates=40, validate_every=10, save_every=40, clip_norm=0.0)
    result = _run(tmp_path, cfg, batches=make_batches(10, 16, seed=1))
    rows = _rows(tmp_path / "valid_log.csv")
    probes = list(probe_subnets(SPACE, seed=cfg.seed))
    assert [r["probe"] for r in rows[:len(probes)]] == probes
    assert {int(r["update"]) for r in rows} == {10, 20, 30, 40}
    for name in probes:
        losses = [float(r["loss"]) for r in rows if r["probe"] == name]
        assert losses[-1] < losses[0] - 0.3, (name, losses)
    assert result.update == 40 and result.tokens > 0
    assert set(result.last_valid) == set(probes)
    best = load_checkpoint(tmp_path / BEST_CHECKPOINT, expect=IDENTITY)
    assert best["best_loss"] == result.best_loss < float("inf")


class Interrupt(Exception):
    pass


class DyingBatcher(ListBatcher):
    """Simulates a kill: raises when batch number `die_at` (0-based) is requested."""

    def __init__(self, batches, die_at):
        super().__init__(batches)
        self.served, self.die_at = 0, die_at

    def __iter__(self):
        for batch in super().__iter__():
            if self.served == self.die_at:
                raise Interrupt
            self.served += 1
            yield batch


@pytest.mark.parametrize("rule", [SamplingRule("uniform"), SamplingRule("sandwich", 1)])
def test_killed_and_resumed_run_equals_uninterrupted_run_bitwise(tmp_path, rule):
    # 5 batches per epoch, 2 per update: updates cross epoch boundaries; the kill comes in
    # update 5, after the checkpoint at 3 and the validation at 4 (whose rows must go)
    cfg = _config(update_freq=2, sampling=rule)
    batches = make_batches(5, 4, seed=1)
    straight = _run(tmp_path / "a", cfg, batches=batches)
    with pytest.raises(Interrupt):
        train(_model(), cfg, run_dir=tmp_path / "b", train_batches=DyingBatcher(batches, 8),
              valid_batches=VALID, identity=IDENTITY, probes=probe_subnets(SPACE, seed=5),
              space=SPACE, progress=False)
    assert load_checkpoint(tmp_path / "b" / LAST_CHECKPOINT)["update"] == 3
    assert {r["update"] for r in _rows(tmp_path / "b" / "valid_log.csv")} == {"2", "4"}
    resumed = _run(tmp_path / "b", cfg, batches=batches, model=_model(seed=123), resume=True)
    assert resumed.update == straight.update == 6
    a = load_checkpoint(tmp_path / "a" / LAST_CHECKPOINT)
    b = load_checkpoint(tmp_path / "b" / LAST_CHECKPOINT)
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
    for pid, st in a["optimizer"]["state"].items():
        for key, t in st.items():
            assert torch.equal(t, b["optimizer"]["state"][pid][key]), (pid, key)
    assert a["data"] == b["data"]
    for log in ("train_log.csv", "valid_log.csv"):
        assert (tmp_path / "a" / log).read_bytes() == (tmp_path / "b" / log).read_bytes()
    assert len(_rows(tmp_path / "a" / "train_log.csv")) == 6


def test_resume_continues_to_a_larger_max_updates(tmp_path):
    straight = _run(tmp_path / "a", _config(max_updates=6))
    _run(tmp_path / "b", _config(max_updates=3))
    resumed = _run(tmp_path / "b", _config(max_updates=6), resume=True)
    assert straight.update == resumed.update == 6
    a = load_checkpoint(tmp_path / "a" / LAST_CHECKPOINT)["model"]
    b = load_checkpoint(tmp_path / "b" / LAST_CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refusals_name_the_problem(tmp_path):
    _run(tmp_path, _config(max_updates=2))
    with pytest.raises(ValueError, match="already holds a run"):
        _run(tmp_path, _config(max_updates=2))
    with pytest.raises(ValueError, match=r"other settings .*clip_norm: 1\.0 vs 0\.5"):
        _run(tmp_path, _config(max_updates=4, clip_norm=0.5), resume=True)
    with pytest.raises(ValueError, match="another kind"):
        train(_model(), _config(max_updates=4), run_dir=tmp_path, resume=True,
              train_batches=ListBatcher(make_batches(4, 4, 1)), valid_batches=VALID,
              identity={**IDENTITY, "kind": "transformer"}, probes={"x": SPACE.largest()},
              space=SPACE, progress=False)
    with pytest.raises(ValueError, match="needs the search space"):
        train(_model(), _config(), run_dir=tmp_path / "c", train_batches=ListBatcher([]),
              valid_batches=VALID, identity=IDENTITY, probes={"x": SPACE.largest()})


def _merge(batches):
    pairs = []
    for src, _, target in batches:
        for s, t in zip(src.tolist(), target.tolist(), strict=True):
            pairs.append(([x for x in s if x > 3], [x for x in t if x > 3]))
    return collate(pairs)


@pytest.fixture()
def captured(monkeypatch):
    """Adam.step records each parameter's gradient (by position) instead of stepping."""
    grads: list = []

    def capture(self, closure=None):
        grads.clear()
        for group in self.param_groups:
            grads.extend(None if p.grad is None else p.grad.clone() for p in group["params"])

    monkeypatch.setattr(torch.optim.Adam, "step", capture)
    return grads


def test_accumulation_equals_one_big_batch(tmp_path, captured):
    """Token-normalised accumulation: 2 micro-batches give the gradient of their union
    (load balancing is a per-batch statistic, so it is off here)."""
    small = make_batches(2, 3, seed=4)
    cfg = _config(max_updates=1, validate_every=0, save_every=0, clip_norm=0.0,
                  load_balance_coef=0.0)
    _run(tmp_path / "a", replace(cfg, update_freq=2), batches=small, model=_model(dropout=0.0))
    accumulated = list(captured)
    _run(tmp_path / "b", cfg, batches=[_merge(small)], model=_model(dropout=0.0))
    assert len(accumulated) == len(captured)
    for a, b in zip(accumulated, captured, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_sandwich_gradient_is_the_token_mean_over_its_subnets(tmp_path, captured):
    model = _model(dropout=0.0)
    reference = _model(dropout=0.0)
    batch = make_batches(1, 5, seed=8)
    cfg = _config(max_updates=1, sampling=SamplingRule("sandwich", 0), clip_norm=0.0,
                  load_balance_coef=0.5, validate_every=0, save_every=0)
    _run(tmp_path, cfg, batches=batch, model=model)
    # naive reference: sum the per-subnet loss sums, divide by tokens x subnets
    total, ntok = 0.0, 0
    src, prev, target = batch[0]
    for subnet in (SPACE.largest(), SPACE.smallest()):
        logits, aux = reference(src, prev, subnet)
        out = label_smoothed_nll(logits, target, epsilon=0.1)
        total = total + out.loss + 0.5 * out.ntokens * aux.load_balance
        ntok += out.ntokens
    (total / ntok).backward()
    used = 0
    for got, q in zip(captured, reference.parameters(), strict=True):
        if q.grad is None:
            assert got is None  # untouched by every subnet: Adam must skip it
        else:
            used += 1
            torch.testing.assert_close(got, q.grad, rtol=1e-5, atol=1e-7)
    assert used > 0


def test_in_place_distillation_gradient_matches_a_naive_reference(tmp_path, captured):
    """Sandwich + distillation: the largest subnet learns from labels, the smallest from
    (1 - w) * label loss + w * KL(largest's detached prediction || its own)."""
    w = 0.7
    model, reference = _model(dropout=0.0), _model(dropout=0.0)
    batch = make_batches(1, 5, seed=8)
    cfg = _config(max_updates=1, sampling=SamplingRule("sandwich", 0), clip_norm=0.0,
                  load_balance_coef=0.5, validate_every=0, save_every=0, distill_weight=w)
    _run(tmp_path, cfg, batches=batch, model=model)
    src, prev, target = batch[0]
    t_logits, t_aux = reference(src, prev, SPACE.largest())
    teacher = out_t = label_smoothed_nll(t_logits, target, epsilon=0.1)
    s_logits, s_aux = reference(src, prev, SPACE.smallest())
    out_s = label_smoothed_nll(s_logits, target, epsilon=0.1)
    lp_t = torch.log_softmax(t_logits.detach(), -1)
    kl = (lp_t.exp() * (lp_t - torch.log_softmax(s_logits, -1))).sum(-1)
    kl = kl.masked_fill(target.eq(0), 0.0).sum()
    torch.testing.assert_close(kl, distillation_kl(s_logits, lp_t, target))
    total = (teacher.loss + 0.5 * out_t.ntokens * t_aux.load_balance
             + (1 - w) * out_s.loss + w * kl + 0.5 * out_s.ntokens * s_aux.load_balance)
    (total / (out_t.ntokens + out_s.ntokens)).backward()
    used = 0
    for got, q in zip(captured, reference.parameters(), strict=True):
        assert (got is None) == (q.grad is None)
        if got is not None:
            used += 1
            torch.testing.assert_close(got, q.grad, rtol=1e-5, atol=1e-7)
    assert used > 0


def test_distillation_weight_zero_is_plain_sandwich_and_weight_changes_training(tmp_path):
    rule = SamplingRule("sandwich", 1)
    runs = {}
    for name, w in (("plain", None), ("zero", 0.0), ("kd", 0.5)):
        cfg = _config(max_updates=3, sampling=rule, validate_every=0, save_every=0,
                      **({} if w is None else {"distill_weight": w}))
        _run(tmp_path / name, cfg)
        runs[name] = load_checkpoint(tmp_path / name / LAST_CHECKPOINT)["model"]
    for key, value in runs["plain"].items():
        assert torch.equal(value, runs["zero"][key]), key
    assert any(not torch.equal(v, runs["kd"][k]) for k, v in runs["plain"].items())


class _AutocastSpy(FakeSupernet):
    """Records whether CPU autocast was on at each forward, per train/eval mode."""

    def __init__(self) -> None:
        super().__init__(0.1)
        self.seen: set[tuple[bool, bool]] = set()

    def forward(self, src, prev, subnet):
        self.seen.add((self.training, torch.is_autocast_enabled("cpu")))
        with torch.autocast("cpu", enabled=False):  # the stand-in is not autocast-safe
            return super().forward(src, prev, subnet)


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_cpu_bf16_autocasts_training_passes_only(tmp_path, cpu_bf16):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _AutocastSpy()
    result = _run(tmp_path, _config(max_updates=2, validate_every=2, cpu_bf16=cpu_bf16),
                  model=model)
    # training passes under autocast only when asked; validation always in fp32
    assert model.seen == {(True, cpu_bf16), (False, False)}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert math.isfinite(result.best_loss)


def test_standalone_model_trains_with_a_fixed_architecture(tmp_path):
    config = make_config(8, 1, 2, 8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = FakePlain(config)
    cfg = _config(max_updates=12, sampling=None, validate_every=6, save_every=6)
    result = train(model, cfg, run_dir=tmp_path, train_batches=ListBatcher(
        make_batches(6, 8, seed=2)), valid_batches=VALID,
        identity={"kind": "fake-plain", "subnet": config.to_dict()},
        probes={"model": config}, progress=False)
    rows = _rows(tmp_path / "valid_log.csv")
    assert [r["probe"] for r in rows] == ["model", "model"]
    assert {r["subnet_key"] for r in rows} == {config.key()}
    assert {r["subnets"] for r in _rows(tmp_path / "train_log.csv")} == {config.key()}
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    assert result.best_loss == pytest.approx(float(rows[1]["loss"]))
    assert len(synthetic_pairs(3, 0)) == 3


class _RoutingSpy(FakeSupernet):
    """Records the router warm-up flag at each training forward."""

    def __init__(self) -> None:
        super().__init__(0.1)
        self.random_routing = False
        self.seen: list[bool] = []

    def forward(self, src, prev, subnet):
        if self.training:
            self.seen.append(self.random_routing)
        return super().forward(src, prev, subnet)


def test_the_router_warmup_routes_randomly_for_its_first_updates_only(tmp_path):
    model = _RoutingSpy()
    _run(tmp_path, _config(max_updates=5, router_warmup=2, validate_every=0, save_every=0),
         model=model)
    assert model.seen == [True, True, False, False, False]  # one subnet per update
    with pytest.raises(ValueError, match="router_warmup"):
        _config(router_warmup=-1)
