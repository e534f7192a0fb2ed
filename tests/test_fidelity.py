"""`automoe fidelity`: subnets of equal FLOPs in bands, trained alone with two seeds and
(some) twice the budget, against the supernet's inherited scores.

The banded choice is checked against the pool recomputed outside the function; the study
runs end to end on the `tiny` space (few updates) through the CLI, with the second trial of
its first job SIGKILLed after its first report: the study stops with a one-line error,
``--resume`` finishes it without retraining the finished trial. Every figure of
fidelity.json is recomputed from fidelity.csv / standalone.csv with brute-force pair
counting, the standalone scores from the per-sentence archives, and the report's proxies
against synthetic tables whose answer is known.
"""

from __future__ import annotations

import itertools
import json
import random
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from search_helpers import kill_after_first_report, make_world

from automoe.cli import main
from automoe.costs.flops import flops as count_flops
from automoe.fidelity import Chosen, choose_banded, double_budget_keys, traits
from automoe.fidelity_report import FIDELITY_COLUMNS, STANDALONE_COLUMNS, agreement_report
from search_spaces import load_space

pytestmark = pytest.mark.slow

TRAIN = ["--max-updates", "6", "--warmup-updates", "1", "--max-tokens", "256",
         "--valid-sentences", "8", "--report-every", "2", "--beam", "2", "--test-sentences", "4"]
STUDY = ["--bands", "2", "--per-band", "2", "--dense-per-band", "1", "--seeds", "2",
         "--double", "2", "--pool", "600", "--dev-sentences", "12"]


def test_bands_hold_equal_flops_dense_and_moe_subnets_that_differ():
    space = load_space("demo")
    chosen = choose_banded(space, bands=3, per_band=6, dense_per_band=2, band_width=0.05,
                           seed=3, pool=3000)
    assert [c.band for c in chosen] == [b for b in range(3) for _ in range(6)]
    assert len({c.config.key() for c in chosen}) == 18
    # the pool and its quantile centres, recomputed outside the function
    rng = random.Random(3)
    pool = {}
    for i in range(3000):
        c = space.sample_dense(rng) if i % 2 else space.sample(rng)
        pool.setdefault(c.key(), c)
    logf = np.log([count_flops(c).flops for c in pool.values()])
    centres = np.exp(np.quantile(logf, [0.25, 0.5, 0.75]))
    for band in range(3):
        members = [c.config for c in chosen if c.band == band]
        ratio = np.array([count_flops(c).flops for c in members]) / centres[band]
        assert (np.abs(ratio - 1) <= 0.05).all()
        assert sum(c.is_dense for c in members) == 2
        moe = [c for c in members if not c.is_dense]
        assert len(moe) == 4
        # greedy diversity: no two subnets of a band share every trait; the MoE ones differ
        # in expert counts, sizes or top-k, and depths vary across the band
        assert len({traits(c) for c in members}) == 6
        assert len({traits(c)[2:] for c in moe}) == 4
        assert len({(c.encoder_layers, c.decoder_layers) for c in members}) > 1
    again = choose_banded(space, bands=3, per_band=6, dense_per_band=2, band_width=0.05,
                          seed=3, pool=3000)
    assert [c.config.key() for c in again] == [c.config.key() for c in chosen]
    with pytest.raises(ValueError, match="overlap"):
        choose_banded(load_space("tiny"), bands=30, per_band=2, dense_per_band=1,
                      band_width=0.05, seed=0, pool=400)
    with pytest.raises(ValueError, match="raise --pool"):
        choose_banded(space, bands=3, per_band=60, dense_per_band=30, band_width=0.01,
                      seed=0, pool=200)


def test_double_budget_subnets_are_whole_bands_from_the_middle_out():
    space = load_space("demo")
    configs = [space.sample(random.Random(i)) for i in range(12)]
    chosen = [Chosen(i // 4, "moe", c) for i, c in enumerate(configs)]  # 3 bands of 4
    keys = [c.key() for c in configs]
    assert double_budget_keys(chosen, 6) == keys[4:8] + keys[0:2]
    assert double_budget_keys(chosen, 0) == []


def _brute_tau(x, y, pairs) -> float:
    num = tx = ty = 0
    for i, j in pairs:
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        num, tx, ty = num + sx * sy, tx + (sx != 0), ty + (sy != 0)
    return float(num / np.sqrt(tx * ty))


def _within(bands) -> list[tuple[int, int]]:
    return [(i, j) for i, j in itertools.combinations(range(len(bands)), 2)
            if bands[i] == bands[j]]


def _synthetic(n_bands: int = 3, per_band: int = 6, seed: int = 0
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A study whose answers are known: standalone loss falls with params_total, inherited
    loss is the standalone loss plus noise, FLOPs equal inside each band."""
    rng = np.random.default_rng(seed)
    rows, sa = [], []
    for b in range(n_bands):
        for i in range(per_band):
            key = f"{b * per_band + i:016x}"
            params = rng.uniform(1e5, 1e6)
            loss = 6.0 - 0.5 * b - params / 1e6
            rows.append({"key": key, "band": b, "role": "dense" if i < 2 else "moe",
                         "is_dense": i < 2, "flops": 1e8 * (b + 1),
                         "params_active": rng.uniform(1e5, 1e6), "params_total": params,
                         "inherited_loss": loss + rng.normal(0, 0.01),
                         "inherited_bleu": 10 - loss, "inherited_chrf": 30 - loss,
                         "standalone_loss": loss,
                         "standalone_bleu": 10 - loss, "loss_seconds": 1.0, "bleu_seconds": 5.0})
            for seed_index in (0, 1):
                sa.append({"key": key, "band": b, "is_dense": i < 2, "seed": seed_index,
                           "budget": 1, "standalone_loss": loss + rng.normal(0, 1e-3),
                           "standalone_bleu": 10 - loss})
    return pd.DataFrame(rows), pd.DataFrame(sa)


def test_report_orients_every_proxy_and_pools_pairs_inside_bands():
    table, standalone = _synthetic()
    report = agreement_report(table, standalone, resamples=200)
    loss = report["loss"]
    # more parameters = lower loss here: the oriented proxy ranks perfectly
    assert loss["within_band"]["params_total"]["tau"] == pytest.approx(1.0)
    assert loss["overall"]["params_total"]["tau"] > 0.3
    # FLOPs is constant inside a band: it ranks nothing there, and everything across bands
    assert loss["within_band"]["flops"] is None or loss["within_band"]["flops"]["tau"] is None \
        or np.isnan(loss["within_band"]["flops"]["tau"])
    bands = table["band"].to_numpy()
    truth = -table["standalone_loss"].to_numpy()
    assert loss["within_band"]["inherited"]["tau"] == pytest.approx(
        _brute_tau(-table["inherited_loss"].to_numpy(), truth, _within(bands)))
    assert loss["best_param_proxy"] == "params_total"
    assert report["bleu"]["within_band"]["params_total"]["tau"] == pytest.approx(1.0)
    # every inherited objective against both targets, with its CPU cost
    objectives = report["objectives"]
    assert objectives["cpu_seconds"] == {"loss": 1.0, "bleu": 5.0, "chrf": 5.0}
    assert objectives["loss"]["loss"]["within_band"] == loss["within_band"]["inherited"]
    assert objectives["bleu"]["bleu"]["overall"] == report["bleu"]["overall"]["inherited"]
    # each MoE subnet against the dense subnet nearest in total parameters (brute force)
    matched = report["moe_minus_param_matched_dense"]
    dense = table[table["is_dense"]]
    for pair in matched["pairs"]:
        row = table.set_index("key").loc[pair["moe"]]
        gaps = np.abs(np.log(dense["params_total"] / row["params_total"]))
        assert pair["dense"] == dense["key"].iloc[int(np.argmin(gaps.to_numpy()))]
    want = np.mean([p["loss"] for p in matched["pairs"]])
    assert matched["loss"]["delta"] == pytest.approx(want)
    assert matched["loss"]["lo"] <= want <= matched["loss"]["hi"]
    assert len(matched["pairs"]) == int((~table["is_dense"]).sum())
    # MoE - dense: the synthetic MoE subnets are neither better nor worse by design; the
    # interval must hold the true per-band difference
    diff = report["moe_minus_dense"]["loss"]
    for band, entry in diff["per_band"].items():
        rows = table[table["band"] == int(band)]
        want = rows.loc[~rows["is_dense"], "standalone_loss"].mean() - \
            rows.loc[rows["is_dense"], "standalone_loss"].mean()
        assert entry["delta"] == pytest.approx(want, abs=2e-3)
        assert entry["lo"] <= entry["delta"] <= entry["hi"]


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("fidelity")
    supernet, data = make_world(root)
    out = root / "study"
    chosen = choose_banded(load_space("tiny"), bands=2, per_band=2, dense_per_band=1,
                           band_width=0.05, seed=0, pool=600)
    keys = [c.config.key() for c in chosen]
    kill: dict = {}
    killer = threading.Thread(target=kill_after_first_report, args=(
        out / "jobs" / "seed0" / "retrain" / "tune" / f"trial_{keys[1]}" / "result.json",
        kill), daemon=True)
    killer.start()
    argv = ["fidelity", str(supernet), "--data", str(data), "--out", str(out), *STUDY,
            "--concurrent", "1", "--max-failures", "0", "--bootstrap", "200", "-q", *TRAIN]
    rc1 = main(argv)
    killer.join(timeout=5)
    first_model = (out / "jobs" / "seed0" / "retrain" / "models" / keys[0] / "model"
                   / "model.safetensors")
    stamp = first_model.stat().st_mtime_ns
    rc2 = main([*argv, "--resume"])
    return {"out": out, "keys": keys, "rc": (rc1, rc2), "kill": kill, "stamp": stamp,
            "first_model": first_model, "argv": argv, "supernet": supernet}


def test_interrupted_study_resumes_without_redoing_finished_trials(study):
    assert study["kill"].get("killed"), "the second trial was not killed mid-training"
    assert study["rc"] == (2, 0)
    assert study["first_model"].stat().st_mtime_ns == study["stamp"]  # not retrained
    out = study["out"]
    for job, n, updates in (("seed0", 4, 6), ("seed1", 4, 6), ("budget2x", 2, 12)):
        trained = pd.read_csv(out / "jobs" / job / "retrained.csv", dtype={"key": str})
        assert (trained["status"] == "finished").all() and len(trained) == n, job
        assert (trained["updates"] == updates).all(), job


def test_fidelity_files_hold_the_columns_and_every_tau_recomputes(study):
    out = study["out"]
    table = pd.read_csv(out / "fidelity.csv", dtype={"key": str})
    standalone = pd.read_csv(out / "standalone.csv", dtype={"key": str})
    report = json.loads((out / "fidelity.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert list(table.columns) == list(FIDELITY_COLUMNS)
    assert list(standalone.columns) == list(STANDALONE_COLUMNS)
    assert list(table["key"]) == study["keys"] and list(table["band"]) == [0, 0, 1, 1]
    assert len(standalone) == 10 and set(standalone["budget"]) == {1, 2}
    assert (table["flops_min"] <= table["flops"] + 1e-6).all()
    assert (table["flops"] <= table["flops_max"] + 1e-6).all()
    assert (table["flops_min"] <= table["flops_observed"] + 1e-6).all()
    assert (table["flops_observed"] <= table["flops_max"] + 1e-6).all()
    # fidelity.csv's standalone loss is the mean over the seeds of standalone.csv
    base = standalone[standalone["budget"] == 1].groupby("key")["standalone_loss"].mean()
    assert table.set_index("key")["standalone_loss"].to_dict() == pytest.approx(base.to_dict())
    bands = table["band"].to_numpy()
    truth = -table["standalone_loss"].to_numpy()
    for name, column, sign in (("inherited", "inherited_loss", -1),
                               ("params_active", "params_active", 1)):
        x = sign * table[column].to_numpy()
        got = report["loss"]["within_band"][name]
        if got is not None and got["tau"] is not None:
            assert got["tau"] == pytest.approx(_brute_tau(x, truth, _within(bands)))
        assert report["loss"]["overall"][name]["tau"] == pytest.approx(
            _brute_tau(x, truth, itertools.combinations(range(4), 2)))
    seeds = standalone[standalone["budget"] == 1].pivot(index="key", columns="seed",
                                                         values="standalone_loss")
    seeds = seeds.loc[table["key"]]  # in the table's order (its bands)
    ceiling = report["loss"]["seed_ceiling"]
    want = _brute_tau(-seeds[0].to_numpy(), -seeds[1].to_numpy(), _within(bands))
    assert ceiling["tau"] == pytest.approx(want, nan_ok=True)
    assert report["loss"]["budget_check"]["subnets"] == 2  # too few for a tau: undefined
    assert report["loss"]["budget_check"]["within_band"] is None
    # the standalone scores are the trained models' own: recomputed from the archive and
    # from a fresh forward pass of one model
    from automoe.sentences import load_sentence_scores
    from automoe.stats import loss_with_se

    key = study["keys"][0]
    arrays = load_sentence_scores(out / "sentences" / "seed0" / f"{key}.npz")
    row = standalone[(standalone["key"] == key) & (standalone["job"] == "seed0")].iloc[0]
    assert loss_with_se(arrays["loss"], arrays["tokens"])[0] == pytest.approx(
        row["standalone_loss"], rel=1e-9)
    assert arrays["bleu_stats"].shape == (12, 10) and arrays["chrf_stats"].shape == (12, 18)
    from automoe.dev_scoring import DevScorer, ScoringSettings
    from supernet import Transformer

    model = Transformer.load(out / "jobs" / "seed0" / "retrain" / "models" / key / "model")
    dev = DevScorer(json.loads((out / "search.json").read_text())["settings"]["data"],
                    ScoringSettings(bleu=False, dev_sentences=12), label_smoothing=0.1)
    assert dev.score(model.eval())["loss"] == pytest.approx(row["standalone_loss"], rel=1e-6)
    assert (out / "fidelity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_test_nll_is_the_models_likelihood_of_each_test_sentence_alone(study):
    """`automoe.study.test_nll` (batched, padded, the test split) against a forward pass of
    each test sentence on its own: src + EOS, BOS + target, target + EOS."""
    import torch

    from automoe.data import load_split
    from automoe.study import test_nll
    from supernet import Transformer
    from supernet.tokens import BOS_ID, EOS_ID

    out = study["out"]
    data = json.loads((out / "search.json").read_text())["settings"]["data"]
    model_dir = out / "jobs" / "seed0" / "retrain" / "models" / study["keys"][0] / "model"
    nll, tokens = test_nll(model_dir, 7, data=data)
    model = Transformer.load(model_dir).eval()
    test = load_split(data, "test")
    assert len(nll) == len(tokens) == 7
    for i in range(7):
        src, tgt = list(test.src[i]), list(test.tgt[i])
        with torch.no_grad():
            logits, _ = model(torch.tensor([src + [EOS_ID]]), torch.tensor([[BOS_ID] + tgt]))
        target = torch.tensor(tgt + [EOS_ID])
        want = torch.nn.functional.cross_entropy(logits[0].double(), target, reduction="sum")
        assert tokens[i] == len(tgt) + 1
        assert nll[i] == pytest.approx(want.item(), rel=1e-5)


def test_every_number_of_the_study_recomputes_from_its_files(study, tmp_path):
    import shutil

    from automoe.recompute import recompute_fidelity

    assert recompute_fidelity(study["out"]) == []
    copy = tmp_path / "copy"
    shutil.copytree(study["out"], copy, ignore=shutil.ignore_patterns("jobs"))
    report = json.loads((copy / "fidelity.json").read_text())
    report["loss"]["overall"]["inherited"]["tau"] += 0.1
    (copy / "fidelity.json").write_text(json.dumps(report))
    table = pd.read_csv(copy / "standalone.csv", dtype={"key": str})
    table.loc[0, "standalone_loss"] += 0.01
    table.to_csv(copy / "standalone.csv", index=False)
    mismatches = recompute_fidelity(copy)
    assert any("loss.overall.inherited.tau" in m for m in mismatches)
    assert any("standalone.csv" in m and "standalone_loss" in m for m in mismatches)


def _swap_out(argv: list[str], out) -> list[str]:
    i = argv.index("--out")
    return [*argv[:i + 1], str(out), *argv[i + 2:]]


def test_a_copied_study_resumes_from_its_small_files_alone(study, tmp_path):
    """On another machine only the small files exist: no supernet, no trained weights.
    Whatever is scored is kept; one missing standalone score retrains that model alone,
    with its seed, to the same numbers."""
    import shutil

    out, key = study["out"], study["keys"][0]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("jobs"))
    (copy / "standalone" / "seed1" / f"{key}.json").unlink()
    (copy / "sentences" / "seed1" / f"{key}.npz").unlink()
    (copy / "fidelity.json").unlink()
    hidden = study["supernet"].with_name("elsewhere")
    study["supernet"].rename(hidden)
    try:
        rc = main([*_swap_out(study["argv"], copy), "--resume"])
    finally:
        hidden.rename(study["supernet"])
    assert rc == 0
    retrained = pd.read_csv(copy / "jobs" / "seed1" / "retrained.csv", dtype={"key": str})
    assert list(retrained["key"]) == [key] and not (copy / "jobs" / "seed0").exists()
    was = pd.read_csv(out / "standalone.csv", dtype={"key": str})
    now = pd.read_csv(copy / "standalone.csv", dtype={"key": str})
    pd.testing.assert_frame_equal(now, was, rtol=1e-6)


def test_a_supernet_variant_reuses_the_trained_models_of_a_study(study, tmp_path, capsys):
    out = study["out"]
    variant = tmp_path / "variant"
    argv = [*_swap_out(study["argv"], variant), "--standalone-from", str(out)]
    assert main(argv) == 0
    assert not (variant / "jobs").exists()
    pd.testing.assert_frame_equal(pd.read_csv(variant / "standalone.csv"),
                                  pd.read_csv(out / "standalone.csv"))
    same = json.loads((out / "fidelity.json").read_text())
    got = json.loads((variant / "fidelity.json").read_text())
    # the same supernet scored again: the same ranking, the same losses to rounding
    assert got["loss"]["within_band"] == same["loss"]["within_band"]
    assert got["loss"]["inherited_minus_standalone"]["mean"] == pytest.approx(
        same["loss"]["inherited_minus_standalone"]["mean"], rel=1e-6)
    assert got["protocol"]["standalone_from"] == str(out.resolve())
    from automoe.recompute import recompute_fidelity

    assert recompute_fidelity(variant) == []
    _variants_recompute_from_their_tables(out, variant, tmp_path / "results")
    other = [*_swap_out(study["argv"], tmp_path / "bad"), "--standalone-from", str(out)]
    other[other.index("--seeds") + 1] = "1"
    assert main(other) == 2
    assert "cannot stand in" in capsys.readouterr().err


def _variants_recompute_from_their_tables(plain, variant, root):
    """Committed as results/ holds them (the variant without the standalone archives it
    shares with its lender), a variant comparison recomputes; a changed score does not."""
    import shutil

    from automoe.recompute import recompute_all
    from automoe.supernet_variants import compare_variants

    shutil.copytree(plain, root / "fidelity", ignore=shutil.ignore_patterns("jobs"))
    shutil.copytree(variant, root / "fidelity-x",
                    ignore=shutil.ignore_patterns("jobs", "seed*", "budget*"))
    (root / "variants.json").write_text(json.dumps(compare_variants(
        {"plain": root / "fidelity", "x": root / "fidelity-x"}, reference="plain",
        resamples=50), default=str))
    checked, mismatches = recompute_all(root)
    assert root / "variants.json" in checked and root / "fidelity-x" / "fidelity.json" in checked
    assert mismatches == []
    table = pd.read_csv(root / "fidelity-x" / "fidelity.csv", dtype={"key": str})
    table.loc[0, "inherited_loss"] += 1.0
    table.to_csv(root / "fidelity-x" / "fidelity.csv", index=False)
    assert any("variants.json:loss.x" in m for m in recompute_all(root)[1])


def test_few_shot_sub_supernets_start_from_the_one_shot_and_score_their_own_kind(
        study, tmp_path):
    """`supernet train --init-from --sample-only` starts from the given supernet's weights;
    `fidelity --supernet-moe` scores the MoE subnets with it and the dense ones with the
    other supernet."""
    from supernet.training.checkpoint import load_checkpoint

    data = json.loads((study["out"] / "search.json").read_text())["settings"]["data"]
    train = ["--space", "tiny", "--data", data, "--preset", "demo", "--max-updates", "2",
             "--warmup-updates", "1", "--max-tokens", "256", "--valid-sentences", "8",
             "--validate-every", "2", "--device", "cpu", "-q"]
    base, moe = tmp_path / "base", tmp_path / "moe"
    assert main(["supernet", "train", "--out", str(base), *train]) == 0
    assert main(["supernet", "train", "--out", str(moe), *train, "--init-from", str(base),
                 "--sample-only", "moe", "--lr", "1e-12", "--min-lr", "1e-13"]) == 0
    before = load_checkpoint(base / "checkpoint_last.pt")["model"]
    after = load_checkpoint(moe / "checkpoint_last.pt")["model"]
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert json.loads((moe / "run.json").read_text())["init_from"] == str(base.resolve())

    out = tmp_path / "few-shot"
    argv = [*_swap_out(study["argv"], out), "--standalone-from", str(study["out"]),
            "--supernet-moe", str(base)]
    assert main(argv) == 0
    plain = pd.read_csv(study["out"] / "fidelity.csv", dtype={"key": str}).set_index("key")
    few = pd.read_csv(out / "fidelity.csv", dtype={"key": str}).set_index("key")
    dense = plain["is_dense"].astype(bool)
    assert np.allclose(few.loc[dense, "inherited_loss"], plain.loc[dense, "inherited_loss"])
    assert not np.allclose(few.loc[~dense, "inherited_loss"],
                           plain.loc[~dense, "inherited_loss"])
    identity = json.loads((out / "search.json").read_text())["supernet"]
    assert identity["checkpoint_moe"].endswith("base/checkpoint_last.pt")


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    supernet, data = make_world(tmp_path)
    out = tmp_path / "study"
    assert main(["fidelity", str(supernet), "--data", str(data), "--out", str(out),
                 "--per-band", "2", "--dense-per-band", "2"]) == 2
    assert "leaves no MoE subnet" in capsys.readouterr().err
    assert not out.exists()
    assert main(["fidelity", str(supernet), "--data", str(data), "--out", str(out),
                 "--resume"]) == 2
    assert "no fidelity study to resume" in capsys.readouterr().err
    assert main(["fidelity", str(supernet), "--data", str(tmp_path / "nope"), "--out",
                 str(out)]) == 2
    assert main(["fidelity", str(supernet), "--data", str(data), "--out", str(out),
                 "--seed", "3"]) == 2
    assert "training seed is set by the study" in capsys.readouterr().err
    assert not out.exists()


def test_resume_refuses_a_supernet_changed_in_place(study, capsys):
    """Same checkpoint path, other weights: the recorded sha256 tells them apart (run last:
    it changes the module's supernet)."""
    ckpt = study["supernet"] / "checkpoint_last.pt"
    from supernet.training.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(ckpt)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] + 1.0
    save_checkpoint(ckpt, {k: v for k, v in state.items() if k != "format"})
    assert main([*study["argv"], "--resume"]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "resume refuses to mix them" in err
