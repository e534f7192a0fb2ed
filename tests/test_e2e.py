"""End to end on the `tiny` space: data → supernet training → search on local Ray →
export → translate → plot, through the same pipeline `make demo` runs. The outputs are
checked against independent oracles: the supernet's own decoding of the exported subnet, a
brute-force best-BLEU pick and Pareto front, and the images themselves."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import imread  # noqa: E402
from search_helpers import make_data  # noqa: E402

from automoe.training.presets import TrainRecipe  # noqa: E402
from automoe.workflows.pipeline import PipelinePreset, run_pipeline  # noqa: E402
from search_spaces import SubnetConfig, load_space  # noqa: E402

TINY = PipelinePreset(
    name="tiny", corpus=None, space="tiny",
    train=TrainRecipe("demo", {"max_updates": 300, "max_tokens": 512, "warmup_updates": 10,
                               "lr": 3e-3, "validate_every": 100, "save_every": 100,
                               "valid_sentences": 24, "seed": 1}, "cpu"),
    search={"objectives": ("bleu", "flops", "latency"), "generations": 2, "population": 4,
            "workers": 2, "dev_sentences": 8, "latency_runs": 2, "latency_warmup": 1,
            "device": "cpu", "seed": 0},
    pick="best-bleu", translate=4, beam=2)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("e2e")
    data = make_data(root / "corpus")
    log: list[str] = []
    outputs = run_pipeline(TINY, root / "run", data_dir=data, quiet=True, echo=log.append)
    return outputs, log


def test_every_step_ran_and_wrote_its_outputs(pipeline):
    out, log = pipeline
    steps = [line.split()[1] for line in log if line.startswith("== ")]
    assert steps == ["supernet:", "search:", "export:", "translate:", "plot:"]
    assert [name for name, _ in out.steps] == ["supernet", "search", "export", "translate",
                                               "plot"]
    scores = json.loads((out.subnet / "scores.json").read_text())
    (note,) = [line for line in log if "the exported subnet, inherited weights" in line]
    assert f"dev BLEU {scores['bleu']:.2f} [{scores['bleu_lo']:.2f}" in note
    assert (out.supernet / "checkpoint_last.pt").is_file()
    meta = json.loads((out.search / "search.json").read_text())
    assert meta["status"] == "finished" and meta["generations_done"] == 2
    table = pd.read_csv(out.search / "candidates.csv")
    assert {"bleu", "flops", "latency_ms", "config"} <= set(table.columns)
    assert table["bleu"].between(0, 100).all() and (table["latency_ms"] > 0).all()
    assert table["bleu"].max() > 0  # the trained supernet translates something right
    base = pd.read_csv(out.search / "baselines.csv")
    assert list(base["baseline"]) == list(load_space("tiny").dense_baselines())
    for name in ("config.json", "model.safetensors", "spm.model", "scores.json"):
        assert (out.subnet / name).is_file(), name


def test_exported_subnet_is_the_best_bleu_row_and_translates_like_the_supernet(pipeline):
    from automoe.checkpoints import load_supernet
    from automoe.data import Tokenizer
    from automoe.decoding import translate_texts

    out, _ = pipeline
    table = pd.read_csv(out.search / "candidates.csv")
    feasible = table[table["feasible"]]
    best = feasible.sort_values(["bleu", "key"], ascending=[False, True]).iloc[0]
    exported = json.loads((out.subnet / "config.json").read_text())
    config = SubnetConfig.from_dict(exported["architecture"])
    assert config.key() == best["key"]
    assert exported["architecture"] == json.loads(best["config"])

    rows = pd.read_csv(out.translations, sep="\t", keep_default_na=False)
    assert len(rows) == TINY.translate
    supernet, _ = load_supernet(out.supernet)
    tokenizer = Tokenizer.load(out.data / "spm.model")
    expected = translate_texts(supernet.bind(config), tokenizer, list(rows["source"]), beam=2,
                               lenpen=0.6)
    assert list(rows["translation"]) == expected


def test_plots_are_images_with_every_candidate_and_the_front(pipeline):
    from automoe.plots import load_run, pareto_mask, plot_front

    out, _ = pipeline
    names = sorted(p.name for p in out.plots)
    baselines = pd.read_csv(out.search / "comparisons.csv")["baseline"].unique()
    paired = [f"paired_vs_{b}.{fmt}" for b in baselines for fmt in ("png", "svg")]
    assert names == sorted(["bleu_vs_flops.png", "bleu_vs_flops.svg", "bleu_vs_latency_ms.png",
                            "bleu_vs_latency_ms.svg", *paired])
    for png in (p for p in out.plots if p.suffix == ".png"):
        image = imread(png)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 400
        assert np.ptp(image[..., :3]) > 0.5  # not a blank canvas
    run = load_run(out.search)
    candidates = pd.read_csv(out.search / "candidates.csv")
    n_base = len(pd.read_csv(out.search / "baselines.csv"))
    for x in ("flops", "latency_ms"):
        fig, ax = plt.subplots()
        front = plot_front(ax, [run], x, "bleu")
        faint = sum(len(c.get_offsets()) for c in ax.collections if c.get_alpha() == 0.25)
        stars = sum(len(c.get_offsets()) for c in ax.collections
                    if "baselines" in str(c.get_label()))
        plt.close(fig)
        assert faint == len(candidates) and stars == n_base
        assert front == pareto_mask(candidates[x].to_numpy(float),
                                    candidates["bleu"].to_numpy(float),
                                    x_max=False, y_max=True).sum()


def test_rerunning_resumes_without_retraining(pipeline, tmp_path):
    out, _ = pipeline
    ckpt = out.supernet / "checkpoint_last.pt"
    before = (ckpt.stat().st_mtime_ns, (out.search / "candidates.csv").read_bytes())
    log: list[str] = []
    again = run_pipeline(TINY, out.root, data_dir=out.data, quiet=True, echo=log.append)
    assert ckpt.stat().st_mtime_ns == before[0]  # the finished supernet run is not retrained
    assert (again.search / "candidates.csv").read_bytes() == before[1]  # nor re-searched
    assert not any(line.startswith("== search") for line in log)


def test_bad_input_fails_before_anything_is_written(tmp_path):
    from automoe.workflows.pipeline import PIPELINE_PRESETS

    with pytest.raises(ValueError, match="no built-in corpus"):
        run_pipeline(PIPELINE_PRESETS["wmt"], tmp_path / "wmt", echo=lambda line: None)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        run_pipeline(TINY, tmp_path / "tiny", data_dir=tmp_path / "nope", echo=lambda line: None)
    assert not any(tmp_path.iterdir())


def test_quality_note_takes_bleu_from_the_comparisons_of_a_loss_search(tmp_path):
    """A loss-objective search scores no BLEU per candidate; the note next to the demo's
    translations then reports the front's paired comparison against each baseline."""
    from automoe.workflows.pipeline import _quality_note

    comparison = {"baseline": "largest", "bleu": 4.5, "bleu_lo": 3.9, "bleu_hi": 5.2,
                  "loss_delta": 0.031, "loss_p": 0.002, "loss_p_holm": 0.064}
    (tmp_path / "scores.json").write_text(json.dumps(
        {"loss": 5.1234, "loss_se": 0.0312, "bleu": None, "comparisons": [comparison]}))
    note = _quality_note(tmp_path)
    assert "dev loss 5.123 ± 0.031 (SE)" in note
    assert "dev BLEU 4.50 [3.90, 5.20] (95%)" in note
    assert "dev loss vs largest +0.031 (p=0.002, Holm p=0.064)" in note
    assert "Below 10 BLEU" in note
    (tmp_path / "scores.json").write_text(json.dumps({"loss": 5.0, "comparisons": []}))
    assert "BLEU" not in _quality_note(tmp_path)


def test_presets_are_settings_checked_when_made():
    """Every shipped preset resolves to the settings its steps run; a preset that sets a
    path the pipeline owns, or names an unknown option, fails when it is made."""
    from automoe.workflows.pipeline import PIPELINE_PRESETS

    for preset in PIPELINE_PRESETS.values():
        options = preset.train.options("supernet")
        assert options.max_updates == preset.train.overrides.get("max_updates",
                                                                 options.max_updates)
        settings = preset.search_settings("S", "D", "O")
        assert (settings.supernet, settings.data, settings.out) == ("S", "D", "O")
    demo = PIPELINE_PRESETS["demo"]
    assert demo.train.options("supernet").max_updates == 500
    assert demo.search_settings("S", "D", "O").objectives == ("loss", "flops", "latency")
    with pytest.raises(ValueError, match="pipeline sets itself"):
        PipelinePreset(name="x", corpus=None, space="tiny", search={"out": "elsewhere"})
    with pytest.raises(ValueError, match="unknown training option"):
        TrainRecipe("demo", {"max_update": 5})
    with pytest.raises(ValueError, match="objective"):
        PipelinePreset(name="x", corpus=None, space="tiny", search={"objectives": ("nope",)})
