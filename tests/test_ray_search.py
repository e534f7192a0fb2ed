"""The search on Ray: identical results to the serial path for the same seed, and a Ray
actor killed mid-generation does not change them. One Ray session for the module."""

from __future__ import annotations

import pandas as pd
import pytest
from search_helpers import make_world

from automoe.search.run import SearchSettings, run_search

ray = pytest.importorskip("ray")

VOLATILE = ["worker", "eval_seconds"]  # who scored a row and how long it took


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-search")
    supernet, data = make_world(root)

    def settings(name: str, workers: int) -> SearchSettings:
        return SearchSettings(supernet=str(supernet), data=str(data), out=str(root / name),
                              objectives=("loss", "flops"), generations=3, population=6,
                              dev_sentences=8, workers=workers, seed=5, progress=False)

    serial = settings("serial", 0)
    run_search(serial)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield settings, root / "serial"
    finally:
        ray.shutdown()


def _same_results(run, reference) -> pd.DataFrame:
    assert (run / "pareto.csv").read_bytes() == (reference / "pareto.csv").read_bytes()
    table = pd.read_csv(run / "candidates.csv")
    pd.testing.assert_frame_equal(table.drop(columns=VOLATILE),
                                  pd.read_csv(reference / "candidates.csv").drop(columns=VOLATILE))
    return table


def test_ray_path_equals_serial_path(setup):
    settings, serial = setup
    outcome = run_search(settings("ray", 2))
    table = _same_results(outcome.run_dir, serial)
    assert set(table["worker"]) == {"w0", "w1"}  # both actors scored


def test_actor_killed_mid_generation_is_replaced(setup):
    settings, serial = setup
    killed: list[str] = []

    def on_result(evaluator, phase, index, evaluation):
        # The first result of the second generation: the other actor still holds work.
        if not killed and progress["generations"] == 1:
            slot = evaluator.names.index(evaluation.worker)
            killed.append(evaluator.names[slot])
            ray.kill(evaluator.actors[slot], no_restart=True)

    progress = {"generations": 0}

    def on_generation(report, state):
        progress["generations"] = state.generation

    outcome = run_search(settings("kill", 2), on_result=on_result, on_generation=on_generation)
    table = _same_results(outcome.run_dir, serial)
    assert killed, "the kill hook never ran"
    replacements = {w for w in table["worker"] if "." in w}  # e.g. "w1.2"
    assert replacements and all(w.split(".")[0] == killed[0] for w in replacements)
