"""`automoe retrain`: front subnets retrained from scratch as Ray Tune trials.

One module-scoped world: a toy corpus, a `tiny`-space supernet, a 2-generation search on
(loss, flops), one Ray session (2 CPUs). Oracles are independent of the code under test:
the subnet choice is brute-forced over all subsets; a trial's model is compared with
`automoe.training.runs.train_subnet` run outside Tune with the same settings (same seed, same
weights, same hypotheses, same BLEU); ASHA's decision is recomputed from the oracle runs'
dev losses. The retrain job itself is run through the CLI: its first trial is SIGKILLed
after its first report, the second is stopped by ASHA, and ``--resume`` finishes the first
from its Tune checkpoint with the uninterrupted run's weights.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from search_helpers import kill_after_first_report, make_world

from automoe.cli import main
from automoe.training.retrain import spread_indices

pytestmark = pytest.mark.slow

# tiny training: 8 updates, a Tune report (and validation) every 2
OVERRIDES = {"max_updates": 8, "warmup_updates": 2, "max_tokens": 256, "valid_sentences": 8,
             "validate_every": 2}
TRAIN_FLAGS = ["--max-updates", "8", "--warmup-updates", "2", "--max-tokens", "256",
               "--valid-sentences", "8", "--report-every", "2", "--beam", "2",
               "--test-sentences", "4"]
SEARCH_FILES = ("candidates.csv", "pareto.csv", "search.json")


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    from automoe.search import SearchSettings, run_search

    root = tmp_path_factory.mktemp("retrain")
    supernet, data = make_world(root)
    run_search(SearchSettings(supernet=str(supernet), data=str(data), out=str(root / "search"),
                              objectives=("loss", "flops"), generations=2, population=6,
                              workers=0, dev_sentences=8, baselines=False, progress=False))
    return root / "search"


def _copy_run(run: Path, to: Path) -> Path:
    to.mkdir(parents=True)
    for name in SEARCH_FILES:
        shutil.copyfile(run / name, to / name)
    return to


def _oracle(run: Path, key: str, out: Path, *, stop: int | None = None) -> dict:
    """`automoe train`'s path (resolve_run + train_subnet), in this process, 1 thread;
    `stop`: only the first `stop` updates of that run (no model, no BLEU)."""
    from automoe.training.runs import fit_subnet, resolve_run, train_subnet
    from search_spaces import SubnetConfig

    cands = pd.read_csv(run / "candidates.csv", dtype={"key": str}).set_index("key")
    config = SubnetConfig.from_dict(json.loads(cands.at[key, "config"]), source=key)
    data = json.loads((run / "search.json").read_text())["settings"]["data"]
    settings = resolve_run(out, kind="subnet", resume=False, preset="demo",
                           overrides=OVERRIDES, data_dir=data, subnet=config)
    if stop is not None:  # one torch thread (conftest), as a trial with 1 CPU
        fit_subnet(type(settings)(**{**settings.__dict__, "options": settings.options.override(
            {"max_updates": stop})}), out, device="cpu", progress=False)
        return {}
    return train_subnet(settings, out, beam=2, lenpen=0.6, test_sentences=4,
                        device="cpu", progress=False)


@pytest.fixture(scope="module")
def job(search_run, ray_session, tmp_path_factory):
    run = search_run
    pareto_text = (run / "pareto.csv").read_text()
    front = pd.read_csv(run / "pareto.csv", dtype={"key": str}).sort_values("flops")
    pair = [front["key"].iloc[0], front["key"].iloc[-1]]
    tmp = tmp_path_factory.mktemp("oracle")
    dev2 = {}  # dev loss at update 2 (ASHA's first rung) of each subnet's run
    for k in pair:
        _oracle(run, k, tmp / "first2" / k, stop=2)
        log = pd.read_csv(tmp / "first2" / k / "valid_log.csv")
        dev2[k] = float(log.loc[log["update"] == 2, "loss"].iloc[0])
    better, worse = sorted(pair, key=dev2.get)
    oracles = {better: _oracle(run, better, tmp / better)}
    kill: dict = {}
    killer = threading.Thread(target=kill_after_first_report, args=(
        run / "retrain" / "tune" / f"trial_{better}" / "result.json", kill), daemon=True)
    killer.start()
    # sequential trials (better first), ASHA on the rung at update 2, no Tune retries
    rc1 = main(["retrain", str(run), "--keys", f"{better},{worse}", "--concurrent", "1",
                "--early-stop", "asha", "--grace-updates", "2", "--reduction-factor", "2",
                "--max-failures", "0", "-q", *TRAIN_FLAGS])
    killer.join(timeout=5)
    first = pd.read_csv(run / "retrained.csv", dtype={"key": str}).set_index("key")
    # a crafted pickle where Tune keeps its experiment state: resume must never load it
    marker = tmp / "pwned"
    (run / "retrain" / "tune" / "tuner.pkl").write_bytes(
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    rc2 = main(["retrain", str(run), "--resume", "-q"])
    final = pd.read_csv(run / "retrained.csv", dtype={"key": str}).set_index("key")
    return SimpleNamespace(run=run, oracles=oracles, oracle_dir=tmp, dev2=dev2, better=better,
                           worse=worse, kill=kill, rc=(rc1, rc2), first=first, final=final,
                           pareto_text=pareto_text, pwned=marker.exists())


# ---- which subnets ------------------------------------------------------------------------


def _brute_spread(values: list[float], k: int) -> tuple[float, list[tuple[int, ...]]]:
    lo, hi = min(values), max(values)
    targets = [lo + i * (hi - lo) / (k - 1) for i in range(k)]
    scored = {s: sum(abs(v - t) for v, t in zip(sorted(values[i] for i in s), targets, strict=True))
              for s in itertools.combinations(range(len(values)), k)}
    best = min(scored.values())
    return best, [s for s, d in scored.items() if math.isclose(d, best, abs_tol=1e-9)]


def test_spread_indices_is_the_brute_force_optimum_with_both_extremes():
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(2, 8)
        values = rng.sample(range(1000), n) if rng.random() < 0.5 else \
            [rng.uniform(0, 1) for _ in range(n)]
        k = rng.randint(2, n)
        got = spread_indices(values, k)
        best, argmins = _brute_spread(values, k)
        assert len(got) == k == len(set(got))
        dist = sum(abs(v - t) for v, t in zip(sorted(values[i] for i in got),
                                              [min(values) + i * (max(values) - min(values))
                                               / (k - 1) for i in range(k)], strict=True))
        assert math.isclose(dist, best, abs_tol=1e-9)
        if len(argmins) == 1:
            assert tuple(got) == argmins[0]
        assert values.index(min(values)) in got and values.index(max(values)) in got
    assert spread_indices([3.0, 1.0, 2.0], 5) == [0, 1, 2]
    assert spread_indices([3.0, 1.0, 2.0], 1) == [0]


def test_dry_run_prints_the_keys_spread_along_the_flops_front(search_run, tmp_path, capsys):
    run = _copy_run(search_run, tmp_path / "run")
    front = pd.read_csv(run / "pareto.csv", dtype={"key": str})
    flops = front["flops"].astype(float).tolist()
    for k in (1, 2, 3, len(front) + 2):
        assert main(["retrain", str(run), "--top", str(k), "--dry-run"]) == 0
        printed = capsys.readouterr().out.split()
        keys = [w for w in printed if w in set(front["key"])]
        if k == 1:  # the best row by the run's first objective (loss)
            expected = {front.loc[front["loss"].idxmin(), "key"]}
        elif k >= len(front):
            expected = set(front["key"])
        else:
            _, argmins = _brute_spread(flops, k)
            assert len(argmins) == 1
            expected = {front["key"][i] for i in argmins[0]}
        assert set(keys) == expected and len(keys) == len(expected)
    assert not (run / "retrain").exists() and not (run / "retrained.csv").exists()


# ---- the job ------------------------------------------------------------------------------


def test_trial_job_reads_the_dict_an_older_version_stored(search_run, tmp_path):
    """Tune's param space holds the trial job as plain JSON. The dict the earlier
    ``job[...]`` code put there (built here by hand from the run's tables, as it did) reads
    back as the `TrialJob` planned now, and the JSON round trip is exact. (A resumed job
    never reads Tune's state: it plans anew from ``retrain.json``; see the resume test.)"""
    from automoe.training.presets import get_preset
    from automoe.training.retrain.job import RetrainSettings, TrialJob, _plan

    run = _copy_run(search_run, tmp_path / "run")
    keys = pd.read_csv(run / "pareto.csv", dtype={"key": str})["key"].tolist()[:2]
    given = {k: v for k, v in OVERRIDES.items() if k != "validate_every"}
    settings = RetrainSettings(run_dir=str(run), keys=tuple(keys), overrides=given,
                               report_every=OVERRIDES["validate_every"], beam=2)
    cands = pd.read_csv(run / "candidates.csv", dtype={"key": str}).set_index("key")
    options = get_preset("demo", "subnet").override(OVERRIDES).resolve(world_size=1)
    data = json.loads((run / "search.json").read_text())["settings"]["data"]
    old = {"data_dir": str(Path(data).resolve()),
           "models_dir": str(run.resolve() / "retrain" / "models"),
           "options": options.to_dict(),
           "configs": {k: json.loads(cands.at[k, "config"]) for k in keys},
           "report_every": 2, "average_last": 0, "beam": 2, "lenpen": 0.6,
           "test_sentences": 0, "cpus": 1, "gpus": 0.0, "continue_run_dirs": True}
    planned = _plan(settings).job
    assert TrialJob.from_dict(old) == dataclasses.replace(planned, continue_run_dirs=True)
    assert TrialJob.from_dict(json.loads(json.dumps(planned.to_dict()))) == planned
    assert planned.configs[keys[0]].key() == keys[0]
    with pytest.raises(ValueError, match="unknown field.*'cpu'"):
        TrialJob.from_dict({**old, "cpu": 1})



def test_killed_trial_resumes_to_the_uninterrupted_model(job):
    assert job.rc == (1, 0)  # the first run lost a trial: it says so; the resume finishes
    assert not job.pwned  # resume read our own JSON/checkpoints, not Tune's pickles
    assert job.kill.get("killed") and job.kill["updates"] == 2
    first, final = job.first.loc[job.better], job.final.loc[job.better]
    assert first["status"] == "error" and first["updates"] == 2
    assert math.isnan(first["bleu_retrained"]) and "died" in first["error"].lower()
    assert final["status"] == "finished" and final["updates"] == 8
    oracle = job.oracles[job.better]
    assert final["bleu_retrained"] == oracle["test"]["bleu"]
    assert final["chrf_retrained"] == oracle["test"]["chrf"]
    assert final["best_dev_loss"] == oracle["best_dev_loss"]
    trial = job.run / "retrain" / "models" / job.better
    ours, theirs = load_file(trial / "model" / "model.safetensors"), \
        load_file(job.oracle_dir / job.better / "model" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    for name in ("test.hyp.txt", "train_log.csv", "valid_log.csv"):
        assert (trial / name).read_text() == (job.oracle_dir / job.better / name).read_text()
    assert Path(final["model_dir"]) == trial / "model"
    assert (trial / "model" / "spm.model").is_file()
    # the test BLEU's interval: sacreBLEU's bootstrap of the trial's own hypotheses
    from sacrebleu.metrics import BLEU

    hyps = (trial / "test.hyp.txt").read_text().splitlines()
    data = json.loads((job.run / "search.json").read_text())["settings"]["data"]
    refs = (Path(data) / "test.ref.txt").read_text().splitlines()[:len(hyps)]
    theirs = BLEU().corpus_score(hyps, [refs], n_bootstrap=1000)
    assert theirs.score == pytest.approx(final["bleu_retrained"])
    assert final["bleu_retrained_lo"] == pytest.approx(theirs._mean - theirs._ci, abs=1e-4)
    assert final["bleu_retrained_hi"] == pytest.approx(theirs._mean + theirs._ci, abs=1e-4)
    assert math.isnan(job.first.loc[job.better, "bleu_retrained_lo"])


def test_a_trial_ended_without_scores_is_stopped_only_under_asha():
    """Tune ends the trials of an interrupted experiment as TERMINATED too: without ASHA
    such a trial was interrupted, and a resume must train it on."""
    from automoe.training.retrain.job import _status

    assert _status("TERMINATED", {"updates": 100}, None, asha=False) == "interrupted"
    assert _status("TERMINATED", {"updates": 100}, None, asha=True) == "stopped early"
    assert _status("RUNNING", {}, None, asha=True) == "interrupted"
    assert _status("TERMINATED", {"bleu_retrained": 1.0}, None, asha=False) == "finished"
    assert _status("ERROR", {}, "boom", asha=False) == "error"


def test_asha_stops_the_trial_that_lags_at_the_first_rung(job):
    # ASHA, reduction factor 2, rung at update 2: the second trial to reach it stops when
    # its dev loss is above the first's (the oracle runs' losses at update 2)
    assert job.dev2[job.worse] > job.dev2[job.better]
    for table in (job.first, job.final):
        row = table.loc[job.worse]
        assert row["status"] == "stopped early" and row["updates"] == 2
        assert math.isnan(row["bleu_retrained"]) and pd.isna(row["error"])
    assert job.final.loc[job.worse, "best_dev_loss"] == job.dev2[job.worse]


def test_tables_carry_retrained_and_inherited_scores(job):
    table = pd.read_csv(job.run / "retrained.csv", dtype={"key": str})
    assert list(table["key"]) == [job.better, job.worse]
    cands = pd.read_csv(job.run / "candidates.csv", dtype={"key": str}).set_index("key")
    for col in ("loss", "flops", "params"):
        assert list(table[col]) == [cands.at[k, col] for k in table["key"]]
    assert (table["max_updates"] == 8).all() and (table["test_sentences"].iloc[0] == 4)
    assert table["device"].iloc[0] == "cpu (1 torch threads)"
    # pareto.csv: the same text with one more column, bleu_retrained (NaN where not retrained)
    pareto = pd.read_csv(job.run / "pareto.csv", dtype={"key": str})
    before = job.pareto_text.splitlines()
    after = (job.run / "pareto.csv").read_text().splitlines()
    assert after[0] == before[0] + ",bleu_retrained"
    expected = {job.better: job.oracles[job.better]["test"]["bleu"]}
    for line_before, line_after, (_, row) in zip(before[1:], after[1:], pareto.iterrows(), strict=True):
        assert line_after.startswith(line_before + ",")
        if row["key"] in expected:
            assert row["bleu_retrained"] == pytest.approx(expected[row["key"]], abs=1e-8)
        else:
            assert math.isnan(row["bleu_retrained"])
    # candidates.csv untouched: automoe plot merges retrained.csv into it by key
    assert "bleu_retrained" not in cands
    from automoe.plots import load_run

    merged = load_run(job.run).candidates.set_index("key")
    assert merged.at[job.better, "bleu_retrained"] == table["bleu_retrained"].iloc[0]


# ---- bad input ----------------------------------------------------------------------------


def test_bad_input_fails_clearly_and_writes_nothing(job, tmp_path, capsys):
    run = _copy_run(job.run, tmp_path / "run")
    (run / "pareto.csv").write_text(job.pareto_text)
    snapshot = {p.name: p.read_bytes() for p in run.iterdir()}
    cases = [
        ([str(tmp_path / "nope")], "no such run directory"),
        ([str(job.oracle_dir)], "no pareto.csv"),
        ([str(run), "--top", "0"], "'top' must be an integer >= 1"),
        ([str(run), "--keys", "feedfacefeedface"], "feedfacefeedface"),
        ([str(run), "--keys", "../../../victim", "--dry-run"], "16 hex digits"),
        ([str(run), "--keys", job.better, "--top", "2"], "--keys and --top exclude"),
        ([str(run), "--cpus-per-trial", "4", *TRAIN_FLAGS], "does not fit the Ray cluster"),
        ([str(run), "--gpus-per-trial", "1", *TRAIN_FLAGS], "GPU: a trial needs 1, the largest node has 0"),
        ([str(run), "--average-last", "9"], "--average-last 9 needs --keep-last"),
        ([str(run), "--early-stop", "asha", "--max-updates", "3"], "warmup_updates"),
        ([str(run), "--resume"], "no retrain job to resume"),
        ([str(job.run), *TRAIN_FLAGS], "already holds a retrain job"),
        ([str(job.run), "--resume", "--max-updates", "10"], "max_updates: stored 8, given 10"),
    ]
    for argv, message in cases:
        assert main(["retrain", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == snapshot
