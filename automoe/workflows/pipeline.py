"""The whole AutoMoE workflow as one resumable run: data → supernet → search → export →
translate → plot (what ``make demo`` runs, through ``scripts/demo.py``).

Every step calls the library function its ``automoe`` command calls, with typed settings
(`PipelinePreset`); each step says what it runs and where, and each run directory stores
its own settings (``data/meta.json``, ``supernet/run.json``, ``search/search.json``,
``subnet/scores.json``). A step whose output is complete is skipped; an interrupted step
resumes from its own checkpoint (training and search are resumable), so re-running the
same call continues where the last one stopped.

Layout of OUT (``runs/demo`` by default)::

    data/        prepared corpus (meta.json, spm.model, token ids, {split}.{src,tgt}.txt)
    supernet/    supernet training run (checkpoint_last.pt, valid_log.csv, run.json)
    search/      search run (candidates.csv, pareto.csv, baselines.csv, search.json)
    subnet/      the exported subnet (config.json, model.safetensors, spm.model, scores.json)
    translations.tsv   a few test sentences: source, reference, the subnet's translation
    plots/       Pareto fronts (PNG + SVG)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from automoe.data import PrepareOptions, load_split
from automoe.devices import check_device, default_device
from automoe.export import export_subnet, load_subnet
from automoe.io_utils import atomic_write_text, read_json
from automoe.plots import load_run, plot_runs
from automoe.run_dir import RunDir
from automoe.search.run import run_search
from automoe.search.settings import SearchSettings, resume_settings
from automoe.training.presets import TrainRecipe
from automoe.workflows.steps import Steps, prepare_corpus, train_supernet_run

__all__ = ["PipelinePreset", "PIPELINE_PRESETS", "PipelineOutputs",
           "run_pipeline", "preset_with", "search_finished"]

# SearchSettings fields a preset may not set: the pipeline owns the paths and the bars
_SEARCH_OWNED = ("supernet", "data", "out", "resume", "progress")


@dataclass(frozen=True)
class PipelinePreset:
    """What one pipeline run does.

    Attributes:
        name: preset name.
        corpus: built-in corpus to prepare (``automoe data corpora``), or None when the
            caller passes a prepared data dir.
        prepare: how the corpus is turned into ids.
        space: search space name or YAML path.
        train: the supernet's training.
        search: `SearchSettings` fields (objectives, algorithm, generations, workers...);
            the pipeline sets the paths.
        pick: the `automoe.pick` rule that chooses the exported subnet.
        translate: how many test sentences the exported subnet translates.
        beam, lenpen: their decoding.
        plot_pairs: (x, y) metric pairs to plot, as `automoe plot --pairs` (None: the
            search's own objectives).
    """

    name: str
    corpus: str | None
    space: str
    prepare: PrepareOptions = PrepareOptions()
    train: TrainRecipe = TrainRecipe()
    search: Mapping[str, Any] = field(default_factory=dict)
    pick: str = "knee"
    translate: int = 5
    beam: int = 4
    lenpen: float = 0.6
    plot_pairs: tuple[tuple[str, str], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "search", dict(self.search))
        owned = sorted(set(self.search) & set(_SEARCH_OWNED))
        if owned:
            raise ValueError(f"preset {self.name!r}: search sets {owned}, which the pipeline "
                             "sets itself")
        self.search_settings(Path("."), Path("."), Path("."))  # validates every field

    def search_settings(self, supernet: Path, data: Path, out: Path, *,
                        progress: bool = True) -> SearchSettings:
        return SearchSettings(supernet=str(supernet), data=str(data), out=str(out),
                              progress=progress, **self.search)


PIPELINE_PRESETS: dict[str, PipelinePreset] = {
    # 2 CPU cores, under 20 minutes with the install: a supernet update of ~2k tokens takes
    # ~1.1 s there, so 500 updates; 5 x 12 candidates ranked by dev loss (it ranks as well as
    # greedy BLEU at 2.6x less CPU, results/README.md) on the first 200 dev sentences, with
    # BLEU and its interval from the front's paired comparisons (greedy decoding of those
    # 200 sentences per front subnet: the whole split would take ~8 min more). The corpus was
    # chosen by measurement (docs/data.md). Latency: batch 1, beam 5 rows, 30 + 30 tokens
    # (HAT), 1 thread per actor.
    "demo": PipelinePreset(
        name="demo", corpus="bible-en-de", space="demo", prepare=PrepareOptions(max_len=64),
        train=TrainRecipe("demo", {"max_updates": 500, "valid_sentences": 150}, "cpu"),
        search={"objectives": ("loss", "flops", "latency"), "algorithm": "nsga2",
                "generations": 5, "population": 12, "workers": 2, "dev_sentences": 200,
                "latency_runs": 5, "latency_warmup": 1, "device": "cpu", "seed": 0},
        pick="knee"),
    # AutoMoE/HAT's WMT'14 recipe on GPUs: bring the data (automoe data prepare --train ...
    # --valid ... --test ...) and pass it with --data. One search actor per GPU.
    "wmt": PipelinePreset(
        name="wmt", corpus=None, space="automoe_wmt14",
        train=TrainRecipe("wmt", {}, "cuda"),
        search={"objectives": ("bleu", "flops", "latency"), "algorithm": "nsga2",
                "generations": 30, "population": 125, "dev_sentences": 500, "beam": 4,
                "device": "cuda", "seed": 0},
        pick="knee", beam=5),
}


@dataclass(frozen=True)
class PipelineOutputs:
    """Where a pipeline run put its results."""

    root: Path
    data: Path
    supernet: Path
    search: Path
    subnet: Path
    translations: Path
    plots: tuple[Path, ...]
    seconds: float
    steps: tuple[tuple[str, float], ...] = ()  # (step, wall seconds) of the steps run


def search_finished(run: Path) -> bool:
    return RunDir.at(run).status() == "finished"


def run_pipeline(preset: PipelinePreset, out: str | Path, *, data_dir: str | Path | None = None,
                 quiet: bool = False, echo: Callable[[str], None] | None = None
                 ) -> PipelineOutputs:
    """Runs (or resumes) the pipeline of `preset` into `out`; returns the output paths.

    Args:
        preset: what to run (`PIPELINE_PRESETS`, `preset_with`, or your own).
        out: the pipeline's root directory (created).
        data_dir: an already prepared data dir; required when ``preset.corpus`` is None.
        quiet: no progress bars in the steps.
        echo: where the steps and output paths are reported (default: stdout).

    Raises ValueError / FileNotFoundError (naming the file or setting) before anything is
    written when the input is bad.
    """
    say = echo or (lambda line: print(line, flush=True))
    began = time.perf_counter()
    step = Steps(say)
    root = Path(out)
    if data_dir is None and preset.corpus is None:
        raise ValueError(f"preset {preset.name!r} has no built-in corpus: pass a prepared "
                         "data dir (automoe data prepare --train SRC TGT ... --out DIR)")
    if data_dir is not None and not (Path(data_dir) / "meta.json").is_file():
        raise FileNotFoundError(f"{Path(data_dir) / 'meta.json'}: not a prepared data dir")
    check_device(preset.train.device, flag=f"preset {preset.name!r} train.device")
    root.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        assert preset.corpus is not None  # checked above
        data = root / "data"
        with step("data", f"prepare {preset.corpus} into {data}"):
            result = prepare_corpus(data, preset.corpus, preset.prepare, quiet=quiet)
            say(f"   {'built' if result.rebuilt else 'up to date'}: "
                f"{result.meta['vocab_size']} subwords")
    else:
        data = Path(data_dir)

    supernet = root / "supernet"
    with step("supernet", f"train the {preset.space} supernet into {supernet}"):
        trained = train_supernet_run(supernet, preset.train, data=data, space=preset.space,
                                     quiet=quiet)
        say(f"   {trained.update} updates; best mean probe dev loss {trained.best_loss:.4f}")

    search = root / "search"
    if not search_finished(search):
        with step("search", f"search {preset.space} into {search}"):
            found = run_search(_search_settings(preset, supernet, data, search, quiet=quiet))
            say(f"   {found.generations} generations, {found.evaluations} candidates, "
                f"front of {found.front_size}")

    subnet = root / "subnet"
    with step("export", f"the {preset.pick!r} subnet of the front into {subnet}"):
        exported = export_subnet(search, subnet, pick=preset.pick, overwrite=True)
        say(f"   candidate {exported.key}")

    translations = root / "translations.tsv"
    with step("translate", f"{preset.translate} test sentences into {translations}"):
        _translate(subnet, data, translations, preset, say)

    plots_dir = root / "plots"
    with step("plot", f"Pareto fronts into {plots_dir}"):
        plot_runs([load_run(search)], plots_dir, pairs=preset.plot_pairs)
    plots = tuple(sorted(plots_dir.glob("*.png")) + sorted(plots_dir.glob("*.svg")))
    outputs = PipelineOutputs(root, data, supernet, search, subnet, translations, plots,
                              time.perf_counter() - began, tuple(step.timings))
    _report(outputs, say)
    return outputs


def _search_settings(preset: PipelinePreset, supernet: Path, data: Path, out: Path, *,
                     quiet: bool) -> SearchSettings:
    """A new search's settings, or a stopped one's stored settings (`resume_settings`)."""
    if RunDir.at(out).has_meta():
        return resume_settings(str(out), progress=not quiet)
    return preset.search_settings(supernet, data, out, progress=not quiet)


def _translate(subnet: Path, data: Path, out: Path, preset: PipelinePreset,
               say: Callable[[str], None]) -> None:
    """Translates the first test sentences with the exported subnet (as `automoe
    translate`) and writes a TSV of source, reference and hypothesis."""
    test = load_split(data, "test")
    src, ref = test.texts("src")[:preset.translate], test.references()[:preset.translate]
    model = load_subnet(subnet, preset.train.device or default_device(), data_dir=data)
    hyps = model.translate(src, beam=preset.beam, lenpen=preset.lenpen)
    rows = ["source\treference\ttranslation"] + [
        "\t".join(x.replace("\t", " ") for x in row) for row in zip(src, ref, hyps, strict=True)]
    atomic_write_text(out, "\n".join(rows) + "\n")
    for s, h in zip(src, hyps, strict=True):
        say(f"  {s[:70]!r}\n    -> {h[:70]!r}")
    say(_quality_note(subnet))


def _quality_note(subnet: Path) -> str:
    """What the translations above can be expected to be worth: the exported subnet's own
    dev scores with their uncertainty (scores.json; BLEU from the front's paired comparisons
    when the search did not score BLEU), said next to them."""
    scores = read_json(subnet / "scores.json")
    compared = scores.get("comparisons") or [{}]
    bleu_from = scores if scores.get("bleu") is not None else compared[0]
    parts = []
    if scores.get("loss") is not None:
        se = scores.get("loss_se")
        parts.append(f"dev loss {scores['loss']:.3f}" + (f" ± {se:.3f} (SE)" if se else ""))
    bleu = bleu_from.get("bleu")
    if bleu is not None:
        lo, hi = bleu_from.get("bleu_lo"), bleu_from.get("bleu_hi")
        parts.append(f"dev BLEU {bleu:.2f}" + (f" [{lo:.2f}, {hi:.2f}] (95%)" if lo is not None
                                                else ""))
    for c in scores.get("comparisons") or []:
        if c.get("loss_delta") is not None:
            # the comparisons are a family (every front subnet x baseline): Holm's p says it
            held = f", Holm p={c['loss_p_holm']:.3g}" if c.get("loss_p_holm") is not None else ""
            parts.append(f"dev loss vs {c['baseline']} {c['loss_delta']:+.3f} "
                         f"(p={c['loss_p']:.3g}{held})")
    note = f"  the exported subnet, inherited weights: {'; '.join(parts)}."
    if bleu is not None and bleu < 10:
        note += (" Below 10 BLEU translations are mostly wrong: a supernet trained for "
                 "minutes on a CPU shows the workflow, not translation quality.")
    return note


def _report(o: PipelineOutputs, say: Callable[[str], None]) -> None:
    say(f"\nAutoMoE pipeline finished in {o.seconds / 60:.1f} min "
        f"({', '.join(f'{name} {sec / 60:.1f}' for name, sec in o.steps)} min). Outputs:")
    for label, path in (("data", o.data), ("supernet", o.supernet),
                        ("search (candidates.csv, pareto.csv)", o.search),
                        ("exported subnet", o.subnet), ("translations", o.translations)):
        say(f"  {label:38s} {path}")
    for p in o.plots:
        say(f"  {'plot':38s} {p}")


def preset_with(name: str, **changes: Any) -> PipelinePreset:
    """A named preset with some fields replaced (``scripts/demo.py`` flags)."""
    if name not in PIPELINE_PRESETS:
        raise ValueError(f"unknown pipeline preset {name!r}; choose one of "
                         f"{sorted(PIPELINE_PRESETS)}")
    return replace(PIPELINE_PRESETS[name], **changes)

