"""Training building blocks: sampling rules, schedules, label-smoothed loss, TrainConfig."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from train_fakes import FakeSpace

from supernet.tokens import PAD_ID
from supernet.training.config import TrainConfig
from supernet.training.evaluate import autocast_for
from supernet.training.loss import distillation_kl, label_smoothed_nll
from supernet.training.sampling import (
    SamplingRule,
    derive_seed,
    probe_subnets,
    subnets_for_update,
)
from supernet.training.schedule import LRSchedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- sampling ---------------------------------------------------------------------------------


def _seeds_in_subprocess(hash_seed: str) -> str:
    # run the module file itself (no package import, so no torch: the check stays cheap)
    code = ("import random, runpy\n"
            "derive_seed = runpy.run_path('supernet/training/sampling.py')['derive_seed']\n"
            "print([random.Random(derive_seed('subnet', 7, u)).random() for u in range(1, 6)])")
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT,
                          capture_output=True, text=True).stdout


def test_subnet_seeds_are_identical_across_processes_with_different_hash_salts():
    here = [random.Random(derive_seed("subnet", 7, u)).random() for u in range(1, 6)]
    assert _seeds_in_subprocess("12345").strip() == str(here)  # pytest's salt is random
    assert len(set(here)) == 5


def test_uniform_rule_is_a_function_of_seed_and_update_and_varies_between_updates():
    space, rule = FakeSpace(), SamplingRule("uniform")
    a = [subnets_for_update(space, rule, seed=3, update=u) for u in range(1, 201)]
    b = [subnets_for_update(space, rule, seed=3, update=u) for u in range(1, 201)]
    assert a == b and all(len(s) == 1 for s in a)
    # the draw equals space.sample on a Random seeded from (seed, update), nothing else
    assert a[41][0] == space.sample(random.Random(derive_seed("subnet", 3, 42)))
    widths = Counter(s[0].decoder_embed_dim for s in a)
    layers = Counter(s[0].decoder_layers for s in a)
    assert set(widths) == {8, 16} and set(layers) == {1, 2}
    assert min(widths.values()) > 60  # uniform over 2 choices: ~100 each
    other_seed = [subnets_for_update(space, rule, seed=4, update=u) for u in range(1, 201)]
    assert other_seed != a


def test_sandwich_rule_has_largest_smallest_then_random():
    space = FakeSpace()
    subnets = subnets_for_update(space, SamplingRule("sandwich", 3), seed=1, update=5)
    assert len(subnets) == 5 == SamplingRule("sandwich", 3).subnets_per_update
    assert subnets[0] == space.largest() and subnets[1] == space.smallest()
    rng = random.Random(derive_seed("subnet", 1, 5))
    assert list(subnets[2:]) == [space.sample(rng) for _ in range(3)]


def test_bad_sampling_rule():
    with pytest.raises(ValueError, match="sampling kind 'sandwhich'"):
        SamplingRule("sandwhich")
    with pytest.raises(ValueError, match="num_random"):
        SamplingRule("sandwich", -1)


def test_probes_are_distinct_fixed_and_cover_dense_and_moe():
    space = FakeSpace()
    probes = probe_subnets(space, seed=2, num_random=3)
    assert probes == probe_subnets(space, seed=2, num_random=3)
    assert probes["smallest"] == space.smallest() and probes["largest"] == space.largest()
    assert len(set(probes.values())) == len(probes)
    assert probes["random-dense"].is_dense and not probes["random-moe"].is_dense


# ---- schedule ---------------------------------------------------------------------------------


def test_cosine_schedule_matches_hat_recipe_points():
    s = LRSchedule("cosine", max_lr=1e-3, warmup_updates=10_000, warmup_init_lr=1e-7,
                   min_lr=1e-7, total_updates=40_000)
    assert s.lr(0) == pytest.approx(1e-7)
    assert s.lr(5_000) == pytest.approx((1e-7 + 1e-3) / 2)
    assert s.lr(10_000) == pytest.approx(1e-3)
    assert s.lr(25_000) == pytest.approx((1e-3 + 1e-7) / 2)  # half-way down the half period
    assert s.lr(40_000) == pytest.approx(1e-7) and s.lr(50_000) == pytest.approx(1e-7)
    decay = [s.lr(n) for n in range(10_000, 40_001, 500)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))


def test_inverse_sqrt_and_constant_schedules():
    s = LRSchedule("inverse_sqrt", max_lr=5e-4, warmup_updates=100, warmup_init_lr=0.0)
    assert s.lr(50) == pytest.approx(2.5e-4)
    assert s.lr(100) == pytest.approx(5e-4) and s.lr(400) == pytest.approx(2.5e-4)
    c = LRSchedule("constant", max_lr=2e-3, warmup_updates=0)
    assert c.lr(0) == c.lr(10**6) == 2e-3


def test_bad_schedules_name_the_problem():
    with pytest.raises(ValueError, match="'linear' is not one of"):
        LRSchedule("linear")
    with pytest.raises(ValueError, match="total_updates"):
        LRSchedule("cosine", warmup_updates=10, total_updates=10)
    with pytest.raises(ValueError, match="warmup_updates >= 1"):
        LRSchedule("inverse_sqrt", warmup_updates=0)


# ---- loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothed_loss_matches_torch_cross_entropy(eps):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen, requires_grad=True)
    target = torch.randint(4, 11, (3, 5), generator=gen)
    target[0, 3:] = PAD_ID
    target[2, 1:] = PAD_ID
    out = label_smoothed_nll(logits, target, epsilon=eps)
    flat_logits, flat_target = logits.reshape(-1, 11), target.reshape(-1)
    want = F.cross_entropy(flat_logits, flat_target, ignore_index=PAD_ID, reduction="sum",
                           label_smoothing=eps)
    nll = F.cross_entropy(flat_logits, flat_target, ignore_index=PAD_ID, reduction="sum")
    assert out.ntokens == int(target.ne(PAD_ID).sum()) == 9
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(out.nll, nll.detach())
    g1 = torch.autograd.grad(out.loss, logits)[0]
    g2 = torch.autograd.grad(want, logits)[0]
    torch.testing.assert_close(g1, g2)


def test_loss_is_computed_in_fp32_and_checks_shapes():
    logits = torch.randn(2, 3, 7).to(torch.bfloat16)
    target = torch.randint(4, 7, (2, 3))
    out = label_smoothed_nll(logits, target, epsilon=0.1)
    assert out.loss.dtype == torch.float32
    want = F.cross_entropy(logits.float().reshape(-1, 7), target.reshape(-1), reduction="sum",
                           label_smoothing=0.1)
    torch.testing.assert_close(out.loss, want)
    with pytest.raises(ValueError, match="do not match target"):
        label_smoothed_nll(logits, target[:, :2], epsilon=0.1)


def test_distillation_kl_equals_a_hand_computed_kl_over_labelled_tokens():
    # one labelled token with V = 2 and one padding position (ignored)
    student = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0]]], requires_grad=True)  # [1, 2, 2]
    teacher = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    target = torch.tensor([[5, PAD_ID]])
    # student probs (1/4, 3/4); KL = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75)
    want = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    kl = distillation_kl(student, teacher, target)
    assert kl.item() == pytest.approx(want, rel=1e-6)
    kl.backward()  # d KL / d logits = p_student - p_teacher on labelled tokens, 0 on padding
    torch.testing.assert_close(student.grad, torch.tensor([[[-0.25, 0.25], [0.0, 0.0]]]))
    assert distillation_kl(teacher.clone(), teacher, target).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_kl(student.bfloat16(), teacher, target).dtype == torch.float32
    with pytest.raises(ValueError, match="do not match"):
        distillation_kl(student[:, :1], teacher, target)


def test_autocast_for_cpu_only_when_asked():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with autocast_for(cpu, True):  # the CUDA switch alone leaves the CPU in fp32
        assert not torch.is_autocast_enabled("cpu")
    with autocast_for(cpu, False, cpu=True):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast_for(cuda, False, cpu=True):  # a CUDA device never autocasts the CPU
        assert not torch.is_autocast_enabled("cpu")


# ---- config -----------------------------------------------------------------------------------


def test_train_config_round_trips_and_reports_differences():
    cfg = TrainConfig(max_updates=10, schedule=LRSchedule("inverse_sqrt", warmup_updates=4),
                      sampling=SamplingRule("sandwich", 1), clip_norm=1.0)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    plain = TrainConfig(max_updates=10, schedule=cfg.schedule, sampling=None)
    assert TrainConfig.from_dict(plain.to_dict()) == plain
    other = TrainConfig.from_dict({**cfg.to_dict(), "max_updates": 20, "clip_norm": 0.5})
    assert cfg.differences(other, ignore=("max_updates",)) == ["clip_norm: 1.0 vs 0.5"]
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['lr'\]"):
        TrainConfig.from_dict({**cfg.to_dict(), "lr": 1})
    with pytest.raises(ValueError, match="'update_freq' must be an integer >= 1"):
        TrainConfig(max_updates=1, schedule=cfg.schedule, update_freq=0)
    kd = TrainConfig(max_updates=10, schedule=cfg.schedule, sampling=SamplingRule("sandwich", 1),
                     distill_weight=0.5, cpu_bf16=True)
    assert TrainConfig.from_dict(kd.to_dict()) == kd
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("distill_weight", "cpu_bf16")}
    assert TrainConfig.from_dict(old) == cfg  # checkpoints from before the two settings
    with pytest.raises(ValueError, match="distill_weight > 0 needs the sandwich"):
        TrainConfig(max_updates=1, schedule=cfg.schedule, distill_weight=0.5)
    with pytest.raises(ValueError, match=r"distill_weight must be in \[0, 1\]"):
        TrainConfig(max_updates=1, schedule=cfg.schedule, sampling=kd.sampling,
                    distill_weight=1.5)
    assert math.isfinite(cfg.schedule.lr(3))


# ---- presets ----------------------------------------------------------------------------------


def test_wmt_preset_is_the_automoe_hat_recipe():
    from automoe.training.presets import get_preset

    sup = get_preset("wmt", "supernet").resolve(world_size=8)
    assert sup.update_freq == 16  # HAT: update-freq 128 / #GPUs
    assert sup.max_tokens * sup.update_freq * 8 == 524_288
    assert get_preset("wmt", "supernet").resolve(world_size=1).update_freq == 128
    cfg = sup.train_config(supernet=True)
    assert (cfg.max_updates, cfg.schedule.warmup_updates, cfg.schedule.total_updates) == (
        40_000, 10_000, 40_000)
    assert cfg.schedule.lr(0) == pytest.approx(1e-7) and cfg.schedule.lr(10_000) == 1e-3
    assert cfg.adam_betas == (0.9, 0.98) and cfg.label_smoothing == 0.1 and cfg.clip_norm == 0
    assert sup.model_options().dropout == 0.3 and sup.model_options().attention_dropout == 0.1
    sub = get_preset("wmt", "subnet").resolve(world_size=8)
    assert sub.warmup_updates == 4_000 and sub.train_config(supernet=False).sampling is None


def test_new_training_options_map_to_the_loop_and_the_model():
    from automoe.training.presets import TrainOptions

    opts = TrainOptions(max_updates=10, max_tokens=64, sampling="sandwich", cpu_bf16=True,
                        shared_positions=True, distill_weight=0.5).resolve(1)
    cfg = opts.train_config(supernet=True)
    assert cfg.cpu_bf16 and cfg.distill_weight == 0.5
    assert opts.train_config(supernet=False).distill_weight == 0.0  # no teacher without sampling
    assert opts.model_options(positions_dim=256).positions_dim == 256
    plain = TrainOptions(max_updates=10, max_tokens=64)
    assert plain.model_options(positions_dim=256).positions_dim is None
    assert not plain.train_config(supernet=True).cpu_bf16
    old = {k: v for k, v in plain.to_dict().items()
           if k not in ("cpu_bf16", "shared_positions", "distill_weight")}
    assert TrainOptions.from_dict(old) == plain  # run.json files from before the options


def test_option_defaults_have_one_source():
    """The flat options default to the loop's, the model's and the schedule's own defaults;
    the training commands leave every option to the preset (None = not given), and their
    scoring flags default to what `train_subnet`, `finish_subnet` and `RetrainSettings` do."""
    import dataclasses
    import inspect

    from automoe.cli import build_parser
    from automoe.commands.retrain import _given
    from automoe.commands.train import _overrides
    from automoe.training.presets import TrainOptions
    from automoe.training.retrain.settings import RetrainSettings
    from automoe.training.runs import finish_subnet, train_subnet
    from supernet.options import ModelOptions

    opts = TrainOptions(max_updates=10, max_tokens=64).resolve(world_size=1)
    assert opts.train_config(supernet=True) == TrainConfig(
        max_updates=10, schedule=LRSchedule(total_updates=10))
    assert opts.model_options() == ModelOptions()

    parser = build_parser()
    for argv in (["supernet", "train", "--out", "r"], ["train", "--out", "r"]):
        args = parser.parse_args(argv)
        assert _overrides(args) == {}
        assert all(getattr(args, f.name, None) is None for f in dataclasses.fields(TrainOptions))
    args = parser.parse_args(["train", "--out", "r"])
    retrain = RetrainSettings(run_dir="r")
    for name in ("average_last", "beam", "lenpen", "test_sentences"):
        for fn in (train_subnet, finish_subnet):
            assert inspect.signature(fn).parameters[name].default == getattr(args, name), name
        assert getattr(retrain, name) == getattr(args, name), name
    assert RetrainSettings(run_dir="r", **_given(parser.parse_args(["retrain", "r"]))) == retrain


def test_presets_and_overrides_fail_clearly():
    from automoe.training.presets import get_preset

    with pytest.raises(ValueError, match=r"unknown preset 'big'; choose one of \['demo', 'wmt'\]"):
        get_preset("big", "supernet")
    demo = get_preset("demo", "supernet")
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['learning_rate'\]"):
        demo.override({"learning_rate": 1.0})
    with pytest.raises(ValueError, match="lr schedule 'step'"):
        demo.override({"schedule": "step"}).resolve(world_size=1)
    # the measured demo choices (docs/benchmarks.md, "Quality per minute")
    assert (demo.lr, get_preset("demo", "subnet").lr) == (2e-3, 1e-3)
    assert not (demo.cpu_bf16 or demo.shared_positions or demo.distill_weight)
    assert demo.sampling == "uniform"
    resolved = demo.override({"max_updates": 500, "update_freq": 3}).resolve(world_size=2)
    assert (resolved.update_freq, resolved.schedule_updates) == (3, 500)


def test_resume_keeps_stored_settings(tmp_path):
    from automoe.training.presets import get_preset
    from automoe.training.runs import RUN_FILE, RunSettings, resolve_run

    fresh = resolve_run(tmp_path, kind="supernet", resume=False, preset="demo",
                        overrides={"max_updates": 200, "lr": 2e-3}, data_dir="d", space="tiny")
    assert fresh.options == get_preset("demo", "supernet").override(
        {"max_updates": 200, "lr": 2e-3}).resolve(1)
    (tmp_path / RUN_FILE).write_text(json.dumps(fresh.to_dict()))
    assert RunSettings.from_dict(fresh.to_dict(), source="x") == fresh
    again = resolve_run(tmp_path, kind="supernet", resume=True, preset=None,
                        overrides={"max_updates": 300, "lr": 2e-3}, space="tiny")
    assert again.options.max_updates == 300 and again.options.schedule_updates == 200
    assert again.options.lr == 2e-3 and again.space == "tiny"
    with pytest.raises(ValueError, match=r"only --max-updates may change\): lr: stored 0\.002, "
                                         r"given 0\.001"):
        resolve_run(tmp_path, kind="supernet", resume=True, preset=None, overrides={"lr": 1e-3})
    with pytest.raises(ValueError, match="holds a supernet run, not subnet"):
        resolve_run(tmp_path, kind="subnet", resume=True, preset=None, overrides={})
    with pytest.raises(ValueError, match="a new supernet run needs --space"):
        resolve_run(tmp_path / "new", kind="supernet", resume=False, preset=None,
                    overrides={}, data_dir="d")


def test_subnet_run_inherits_the_supernets_position_table(tmp_path):
    """`automoe train --init-from`: the static model takes the supernet's positions_dim
    (with or without shared_positions), so inherited weights compute what they did."""
    from automoe.data.store import FORMAT, META_FILE
    from automoe.training.presets import get_preset
    from automoe.training.runs import RunSettings, _subnet_model
    from search_spaces import load_space
    from supernet import ModelOptions, SuperTransformer
    from supernet.training.checkpoint import save_checkpoint

    space = load_space("tiny")
    (tmp_path / META_FILE).write_text(json.dumps({"format": FORMAT, "vocab_size": 40}))
    subnet = space.smallest()
    for positions in (None, 32):
        sup = SuperTransformer(space, 40, options=ModelOptions(positions_dim=positions))
        ckpt = save_checkpoint(tmp_path / f"sup{positions}.pt", {
            "kind": "supernet", "space": space.to_dict(), "vocab_size": 40,
            "model_options": sup.options.to_dict(), "model": sup.state_dict()})
        for shared in (False, True):
            opts = get_preset("demo", "subnet").override({"shared_positions": shared})
            settings = RunSettings("subnet", str(tmp_path), opts.resolve(1), subnet=subnet,
                                   init_from=str(ckpt))
            model, identity = _subnet_model(settings)
            assert model.options.positions_dim == positions
            assert identity["model_options"] == model.options.to_dict()
    # from scratch the flag decides: the subnet's own largest width
    opts = get_preset("demo", "subnet").override({"shared_positions": True}).resolve(1)
    model, _ = _subnet_model(RunSettings("subnet", str(tmp_path), opts, subnet=subnet))
    assert model.options.positions_dim == max(subnet.encoder_embed_dim, subnet.decoder_embed_dim)


def test_every_settings_reader_names_unknown_keys_and_the_known_ones():
    # one rule (search_spaces.checks.check_known_fields) for every settings file reader
    from automoe.search.settings import SearchSettings
    from automoe.training.presets import TrainOptions
    from supernet.options import ModelOptions

    readers = [(ModelOptions.from_dict, "model option"), (TrainOptions.from_dict, "training option"),
               (TrainConfig.from_dict, "training setting")]
    for read, what in readers:
        with pytest.raises(ValueError, match=rf"f\.json: unknown {what}\(s\) \['typo'\]; "
                                             r"expected a subset of \[.*'\w+'.*\]"):
            read({"typo": 1}, source="f.json")
    with pytest.raises(ValueError, match=r"s\.json: unknown setting\(s\) \['typo'\]"):
        SearchSettings.from_json({"typo": 1}, source="s.json")


def test_a_few_shot_rule_draws_only_its_kind_of_subnet():
    from search_spaces import load_space

    space = load_space("demo")
    for only, dense in (("dense", True), ("moe", False)):
        rule = SamplingRule("uniform", only=only)
        drawn = [subnets_for_update(space, rule, seed=3, update=u)[0] for u in range(1, 101)]
        assert all(c.is_dense == dense for c in drawn)
        assert len({c.key() for c in drawn}) > 50  # still random within the kind
        assert SamplingRule.from_dict(rule.to_dict()) == rule
    whole = [subnets_for_update(space, SamplingRule("uniform"), seed=3, update=u)[0]
             for u in range(1, 101)]
    assert any(c.is_dense for c in whole) and not all(c.is_dense for c in whole)
    assert SamplingRule.from_dict({"kind": "uniform", "num_random": 2}).only is None
    with pytest.raises(ValueError, match="needs uniform sampling"):
        SamplingRule("sandwich", only="moe")
    with pytest.raises(ValueError, match="'dense', 'moe' or None"):
        SamplingRule("uniform", only="big")
