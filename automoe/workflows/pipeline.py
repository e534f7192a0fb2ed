"""The whole AutoMoE workflow as one resumable run: data → supernet → search → export →
translate → plot (what ``make demo`` runs, through ``scripts/demo.py``).

Every step is an ``automoe`` command line, run in-process through `automoe.cli.main` and
echoed first, so the log of a pipeline run is also the recipe to reproduce it by hand. A
step whose output is complete is skipped; an interrupted step resumes from its own
checkpoint (training and search are resumable), so re-running the same command continues
where the last one stopped.

Layout of OUT (``runs/demo`` by default)::

    data/        prepared corpus (meta.json, spm.model, token ids, {split}.{src,tgt}.txt)
    supernet/    supernet training run (checkpoint_last.pt, valid_log.csv, run.json)
    search/      search run (candidates.csv, pareto.csv, baselines.csv, search.json)
    subnet/      the exported subnet (config.json, model.safetensors, spm.model, scores.json)
    translations.tsv   a few test sentences: source, reference, the subnet's translation
    plots/       Pareto fronts (PNG + SVG)
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from automoe.io_utils import atomic_write_text, read_json
from automoe.run_dir import RunDir

__all__ = ["PipelinePreset", "PIPELINE_PRESETS", "PipelineOutputs", "run_pipeline", "preset_with",
           "run_cli", "search_finished"]


@dataclass(frozen=True)
class PipelinePreset:
    """What one pipeline run does; every field maps onto command-line flags.

    Attributes:
        name: preset name.
        corpus: built-in corpus to prepare (``automoe data corpora``), or None when the
            caller passes a prepared data dir.
        prepare_args: extra ``automoe data prepare`` flags.
        space: search space name or YAML path.
        train_args: ``automoe supernet train`` flags (preset, updates, device...).
        search_args: ``automoe search`` flags (objectives, generations, workers...).
        pick: the ``automoe export --pick`` rule.
        translate: how many test sentences the exported subnet translates.
        translate_args: ``automoe translate`` decoding flags.
        plot_pairs: ``automoe plot --pairs`` (None: the search's own objectives).
    """

    name: str
    corpus: str | None
    space: str
    prepare_args: tuple[str, ...] = ()
    train_args: tuple[str, ...] = ()
    search_args: tuple[str, ...] = ()
    pick: str = "knee"
    translate: int = 5
    translate_args: tuple[str, ...] = ("--beam", "4")
    plot_pairs: str | None = None


PIPELINE_PRESETS: dict[str, PipelinePreset] = {
    # 2 CPU cores, under 20 minutes with the install: a supernet update of ~2k tokens takes
    # ~1.1 s there, so 500 updates; 5 x 12 candidates ranked by dev loss (it ranks as well as
    # greedy BLEU at 2.6x less CPU, results/README.md) on the first 200 dev sentences, with
    # BLEU and its interval from the front's paired comparisons (greedy decoding of those
    # 200 sentences per front subnet: the whole split would take ~8 min more). The corpus was
    # chosen by measurement (docs/data.md). Latency: batch 1, beam 5 rows, 30 + 30 tokens
    # (HAT), 1 thread per actor.
    "demo": PipelinePreset(
        name="demo", corpus="bible-en-de", space="demo",
        prepare_args=("--max-len", "64"),
        train_args=("--preset", "demo", "--max-updates", "500", "--valid-sentences", "150",
                    "--device", "cpu"),
        search_args=("--objectives", "loss,flops,latency", "--algorithm", "nsga2",
                     "--generations", "5", "--population", "12", "--workers", "2",
                     "--dev-sentences", "200", "--latency-runs", "5", "--latency-warmup", "1",
                     "--device", "cpu", "--seed", "0"),
        pick="knee"),
    # AutoMoE/HAT's WMT'14 recipe on GPUs: bring the data (automoe data prepare --train ...
    # --valid ... --test ...) and pass it with --data. One search actor per GPU.
    "wmt": PipelinePreset(
        name="wmt", corpus=None, space="automoe_wmt14",
        train_args=("--preset", "wmt", "--device", "cuda"),
        search_args=("--objectives", "bleu,flops,latency", "--algorithm", "nsga2",
                     "--generations", "30", "--population", "125", "--dev-sentences", "500",
                     "--beam", "4", "--device", "cuda", "--seed", "0"),
        pick="knee", translate_args=("--beam", "5")),
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


def run_cli(argv: Sequence[str], echo: Callable[[str], None],
             timings: list[tuple[str, float]] | None = None) -> None:
    """Runs ``automoe ARGV`` in this process, echoed first; RuntimeError if it fails."""
    from automoe.cli import main

    echo("$ automoe " + shlex.join(argv))
    began = time.perf_counter()
    code = main(list(argv))
    if code != 0:
        raise RuntimeError(f"step failed (exit {code}): automoe {shlex.join(argv)}")
    if timings is not None:
        timings.append((" ".join(argv[:2]) if argv[0] in ("data", "supernet") else argv[0],
                        time.perf_counter() - began))


def search_finished(run: Path) -> bool:
    return RunDir.at(run).status() == "finished"


def run_pipeline(preset: PipelinePreset, out: str | Path, *, data_dir: str | Path | None = None,
                 extra_train: Sequence[str] = (), extra_search: Sequence[str] = (),
                 quiet: bool = False, echo: Callable[[str], None] | None = None
                 ) -> PipelineOutputs:
    """Runs (or resumes) the pipeline of `preset` into `out`; returns the output paths.

    Args:
        preset: what to run (`PIPELINE_PRESETS` or your own).
        out: the pipeline's root directory (created).
        data_dir: an already prepared data dir; required when ``preset.corpus`` is None.
        extra_train, extra_search: flags appended to the training / search commands (they
            win over the preset's, argparse keeps the last value).
        quiet: no progress bars in the steps.
        echo: where the step commands and output paths are reported (default: stdout).
    """
    say = echo or (lambda line: print(line, flush=True))
    began = time.perf_counter()
    timings: list[tuple[str, float]] = []

    def run(argv: list[str]) -> None:
        run_cli(argv, say, timings)

    root = Path(out)
    q = ("--quiet",) if quiet else ()
    if data_dir is None and preset.corpus is None:
        raise ValueError(f"preset {preset.name!r} has no built-in corpus: pass a prepared "
                         "data dir (automoe data prepare --train SRC TGT ... --out DIR)")
    if data_dir is not None and not (Path(data_dir) / "meta.json").is_file():
        raise FileNotFoundError(f"{Path(data_dir) / 'meta.json'}: not a prepared data dir")
    root.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        assert preset.corpus is not None  # checked above
        data = root / "data"
        run(["data", "prepare", "--corpus", preset.corpus, "--out", str(data),
             *preset.prepare_args, *(("-q",) if quiet else ())])
    else:
        data = Path(data_dir)

    supernet = root / "supernet"
    train = ["supernet", "train", "--space", preset.space, "--data", str(data),
             "--out", str(supernet), *preset.train_args, *extra_train, *(("-q",) if quiet else ())]
    if (supernet / "run.json").is_file():  # resume: only the stored settings count
        train = ["supernet", "train", "--out", str(supernet), "--resume",
                 *_max_updates(preset.train_args, extra_train), *(("-q",) if quiet else ())]
    run(train)

    search = root / "search"
    if not search_finished(search):
        if RunDir.at(search).has_meta():
            run(["search", "--resume", str(search), *q])
        else:
            run(["search", "--supernet", str(supernet), "--data", str(data), "--out",
                      str(search), *preset.search_args, *extra_search, *q])

    subnet = root / "subnet"
    run(["export", str(search), "--pick", preset.pick, "-o", str(subnet), "--overwrite"])

    translations = root / "translations.tsv"
    _translate(subnet, data, translations, preset, say, timings)

    plots_dir = root / "plots"
    pairs = ("--pairs", preset.plot_pairs) if preset.plot_pairs else ()
    run(["plot", str(search), "-o", str(plots_dir), *pairs])
    plots = tuple(sorted(plots_dir.glob("*.png")) + sorted(plots_dir.glob("*.svg")))
    outputs = PipelineOutputs(root, data, supernet, search, subnet, translations, plots,
                              time.perf_counter() - began, tuple(timings))
    _report(outputs, say)
    return outputs


def _max_updates(*arg_lists: Sequence[str]) -> list[str]:
    """The last ``--max-updates N`` among the flags (resuming may extend a run)."""
    found: list[str] = []
    for args in arg_lists:
        for i, a in enumerate(args[:-1]):
            if a == "--max-updates":
                found = ["--max-updates", args[i + 1]]
    return found


def _translate(subnet: Path, data: Path, out: Path, preset: PipelinePreset,
               say: Callable[[str], None], timings: list[tuple[str, float]]) -> None:
    """Translates the first test sentences with `automoe translate` and writes a TSV of
    source, reference and hypothesis."""
    from automoe.data import load_split

    test = load_split(data, "test")
    src, ref = test.texts("src")[:preset.translate], test.references()[:preset.translate]
    inp, hyp = out.with_suffix(".src.txt"), out.with_suffix(".hyp.txt")
    atomic_write_text(inp, "".join(s + "\n" for s in src))
    run_cli(["translate", str(subnet), "--input", str(inp), "--output", str(hyp),
              *preset.translate_args], say, timings)
    hyps = hyp.read_text(encoding="utf-8").splitlines()
    rows = ["source\treference\ttranslation"] + [
        "\t".join(x.replace("\t", " ") for x in row) for row in zip(src, ref, hyps, strict=True)]
    atomic_write_text(out, "\n".join(rows) + "\n")
    inp.unlink()
    hyp.unlink()
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
            parts.append(f"dev loss vs {c['baseline']} {c['loss_delta']:+.3f} "
                         f"(p={c['loss_p']:.3g})")
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

