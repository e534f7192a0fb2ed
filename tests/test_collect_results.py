"""scripts/collect_results.py copies a run's small files, never its weights or corpora."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "collect_results.py"


def _collect():
    spec = importlib.util.spec_from_file_location("collect_results", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel, encoding="utf-8")


def test_study_layout_copies_tables_and_plots_not_weights(tmp_path: Path) -> None:
    run, dest = tmp_path / "study", tmp_path / "out"
    _touch(run, "study.json", "moe_vs_dense.csv", "data/meta.json", "data/train.src.npy",
           "supernet/run.json", "supernet/train_log.csv", "supernet/checkpoint_last.pt",
           "search/candidates.csv", "search/comparisons.csv", "dense_search/pareto.csv",
           "search/sentences/comparisons/k.npz",
           "fidelity/fidelity.csv", "fidelity/fidelity.json", "fidelity/fidelity.png",
           "plots/loss_vs_flops.svg", "search/retrain/trial/model.safetensors",
           "fidelity/inherited/a.json", "fidelity/standalone/seed0/a.json",
           "fidelity/sentences/seed0/a.npz", "fidelity/jobs/seed0/retrain/models/a/m.pt")
    (tmp_path / "log.txt").write_text(
        "a:  10%|#   | 1/10\ra: 100%|####| 10/10\ndone\n"
        f"  {tmp_path}/pip-build-env-u3dwie98/overlay/lib/x.py:3: BuildBackendWarning\n")
    assert _collect().main([str(run), str(dest), "--log", str(tmp_path / "log.txt")]) == 0
    got = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert got == {"study.json", "moe_vs_dense.csv", "data/meta.json", "supernet/run.json",
                   "supernet/train_log.csv", "search/candidates.csv",
                   "search/comparisons.csv", "dense_search/pareto.csv",
                   "search/sentences/comparisons/k.npz", "fidelity/fidelity.csv", "fidelity/fidelity.json", "fidelity/fidelity.png",
                   "plots/loss_vs_flops.svg", "study.log", "fidelity/inherited/a.json",
                   "fidelity/standalone/seed0/a.json", "fidelity/sentences/seed0/a.npz"}
    assert (dest / "study.log").read_text() == (
        "a: 100%|####| 10/10\ndone\n  <pip build env>/lib/x.py:3: BuildBackendWarning\n")


def test_pipeline_layout_keeps_the_comparisons_archives_not_weights(tmp_path: Path) -> None:
    run, dest = tmp_path / "demo", tmp_path / "out"
    _touch(run, "search/search.json", "search/candidates.csv", "search/comparisons.csv",
           "search/sentences/comparisons/k.npz", "supernet/run.json",
           "supernet/checkpoint_last.pt", "subnet/config.json", "subnet/model.safetensors",
           "plots/paired_vs_largest.png", "data/train.src.npy", "translations.tsv")
    assert _collect().main([str(run), str(dest)]) == 0
    got = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert got == {"search/search.json", "search/candidates.csv", "search/comparisons.csv",
                   "search/sentences/comparisons/k.npz", "supernet/run.json",
                   "subnet/config.json", "plots/paired_vs_largest.png", "translations.tsv"}


def test_supernet_variants_are_copied_without_their_weights(tmp_path: Path) -> None:
    run, dest = tmp_path / "study", tmp_path / "out"
    _touch(run, "study.json", "variants.json",
           "supernet-sandwich/run.json", "supernet-sandwich/train_log.csv",
           "supernet-sandwich/checkpoint_last.pt", "supernet-few-shot-moe/valid_log.csv",
           "supernet-few-shot-moe/checkpoint_best.pt",
           "fidelity-sandwich/fidelity.csv", "fidelity-sandwich/fidelity.json",
           "fidelity-sandwich/fidelity.png", "fidelity-sandwich/inherited/a.json",
           "fidelity-sandwich/sentences/inherited/a.npz",
           "fidelity-few-shot/standalone.csv", "fidelity-few-shot/jobs/x/model.safetensors")
    assert _collect().main([str(run), str(dest)]) == 0
    got = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert got == {"study.json", "variants.json", "supernet-sandwich/run.json",
                   "supernet-sandwich/train_log.csv", "supernet-few-shot-moe/valid_log.csv",
                   "fidelity-sandwich/fidelity.csv", "fidelity-sandwich/fidelity.json",
                   "fidelity-sandwich/fidelity.png", "fidelity-sandwich/inherited/a.json",
                   "fidelity-sandwich/sentences/inherited/a.npz",
                   "fidelity-few-shot/standalone.csv"}


def test_a_directory_that_is_no_run_is_refused(tmp_path: Path, capsys) -> None:
    assert _collect().main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "neither a pipeline run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_absolute_paths_of_the_machine_become_relative(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run, dest = Path("study"), Path("out")
    absolute = str(tmp_path.resolve() / "study" / "data")
    _touch(run, "study.json", "supernet/run.json")
    (run / "supernet" / "run.json").write_text(f'{{"data": "{absolute}"}}', encoding="utf-8")
    (tmp_path / "driver.log").write_text(f"{tmp_path.resolve()}/automoe/x.py: warn\n")
    assert _collect().main([str(run), str(dest), "--log", "driver.log"]) == 0
    assert (dest / "supernet" / "run.json").read_text() == '{"data": "study/data"}'
    assert (dest / "study.log").read_text() == "automoe/x.py: warn\n"
