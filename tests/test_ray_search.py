"""The search on Ray: a 2-actor search gives the serial search's results for the same seed,
even when an actor is killed mid-generation. One Ray session and one Ray search for the
module (actor start-up dominates the cost)."""

from __future__ import annotations

import pandas as pd
import pytest
from search_helpers import make_world

from automoe.search.run import SearchSettings, run_search

ray = pytest.importorskip("ray")

VOLATILE = ["worker", "eval_seconds"]  # who scored a row and how long it took


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_session):
    """(serial run dir, Ray run dir, names of the killed actors)."""
    root = tmp_path_factory.mktemp("ray-search")
    supernet, data = make_world(root)

    def settings(name: str, workers: int) -> SearchSettings:
        return SearchSettings(supernet=str(supernet), data=str(data), out=str(root / name),
                              objectives=("loss", "flops"), generations=3, population=6,
                              dev_sentences=8, workers=workers, seed=5, progress=False)

    run_search(settings("serial", 0))
    killed: list[str] = []
    done = {"generations": 0}

    def on_result(evaluator, phase, index, evaluation):
        # The first result of generation 1: the other actor still holds queued work.
        if not killed and done["generations"] == 1:
            slot = evaluator.names.index(evaluation.worker)
            killed.append(evaluator.names[slot])
            ray.kill(evaluator.actors[slot], no_restart=True)

    def on_generation(report, state):
        done["generations"] = state.generation

    outcome = run_search(settings("ray", 2), on_result=on_result, on_generation=on_generation)
    return root / "serial", outcome.run_dir, killed


def test_ray_path_equals_serial_path(runs):
    serial, remote, _ = runs
    assert (remote / "pareto.csv").read_bytes() == (serial / "pareto.csv").read_bytes()
    table = pd.read_csv(remote / "candidates.csv")
    pd.testing.assert_frame_equal(table.drop(columns=VOLATILE),
                                  pd.read_csv(serial / "candidates.csv").drop(columns=VOLATILE))
    assert {"w0", "w1"} <= set(table["worker"])  # both actors scored
    assert set(pd.read_csv(serial / "candidates.csv")["worker"]) == {"serial"}


def test_actor_killed_mid_generation_is_replaced(runs):
    _, remote, killed = runs
    assert len(killed) == 1, "the kill hook never ran"
    table = pd.read_csv(remote / "candidates.csv")
    replacement = {w for w in table["worker"] if "." in w}  # e.g. "w1.2"
    assert replacement and {w.split(".")[0] for w in replacement} == {killed[0]}
    # it scores from generation 1 on; whether it starts before the survivor has taken the
    # requeued work of generation 1 is a race (actor start-up), so that is not asserted
    assert min(table.loc[table["worker"].isin(replacement), "generation"]) >= 1
