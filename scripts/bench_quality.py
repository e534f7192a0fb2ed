"""Supernet quality per minute of training (numbers go to docs/benchmarks.md, "Quality per
minute").

    python scripts/bench_quality.py --data DATA_DIR --out OUT_DIR [--part train|speed|report|all]
                                    [--variants baseline,bf16,...] [--threads 1]

Protocol. Wall clock on a shared machine is noisy, so the two halves of "dev loss per
minute" are measured apart and multiplied:

1. ``train``: each variant trains the ``demo`` supernet on the prepared data dir with the
   ``demo`` preset plus the variant's overrides, one variant at a time, in ``OUT/runs/NAME``
   (resumable: an interrupted part continues each run exactly where it stopped). Every
   ``--validate-every`` updates the loop validates its fixed probe subnets (the same for all
   variants: same space and seed) on the first ``--valid-sentences`` dev sentences. The
   curve is the mean over the probes of the dev NLL per target token (nats) versus update:
   independent of the machine's load.
2. ``speed``: seconds per update of each variant, measured in this one process with 1 torch
   thread: every repeat trains each variant (in turn, the order reversed every other repeat)
   from a fresh model for its first ``--speed-updates`` updates (per variant: the same data
   and, for equal sampling rules, the same subnets as its curve run), after one warm-up call
   per variant; the value is the median over repeats of training seconds / updates
   (validation and checkpoint writes excluded). Variants marked ``cost_as`` do exactly the
   arithmetic of another (only a scalar such as the lr differs): the report pools their
   samples, as their differences are the machine's load.
3. ``report``: minutes of a variant's curve = update x its seconds per update / 60. The
   headline is the minutes each variant needs to reach the baseline's final dev NLL (linear
   interpolation between validations) and the ratio baseline minutes / variant minutes.
   Writes ``curves.csv``, ``speed.json``, ``summary.json`` and ``quality_per_minute.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from automoe.io_utils import atomic_write_json, read_json  # noqa: E402
from automoe.training.runs import resolve_run, train_supernet  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """One training recipe: the demo preset plus `overrides` (TrainOptions fields).

    Attributes:
        name: short name (run dir, table row).
        text: what it changes.
        overrides: TrainOptions fields set on top of the demo preset (max_updates included).
        speed_updates: updates timed per repeat of the speed measurement (0 = the default).
        cost_as: the variant whose updates do exactly the same arithmetic (same subnets,
            same ops; only a scalar such as the lr differs): the report pools their speed
            samples, since any difference between them is the machine's load.
    """

    name: str
    text: str
    overrides: dict[str, Any] = field(default_factory=dict)
    speed_updates: int = 0
    cost_as: str = ""


# The demo preset as it was before this benchmark, pinned so the baseline does not follow the
# preset when the preset changes.
BASE = {"max_updates": 600, "sampling": "uniform", "lr": 1e-3, "warmup_updates": 100,
        "max_tokens": 2048, "cpu_bf16": False, "shared_positions": False, "distill_weight": 0.0}
# sandwich updates cost ~3.5 uniform ones (largest + smallest + 2 random passes): its schedule
# is shortened to about the same training time
SANDWICH = {**BASE, "max_updates": 170, "warmup_updates": 30, "sampling": "sandwich",
            "validate_every": 17, "save_every": 17}
VARIANTS = [
    Variant("baseline", "demo preset before this benchmark: uniform, lr 1e-3, warmup 100, "
            "2,048 tokens, fp32, per-width sinusoids", BASE),
    # bf16 is timed over fewer updates: without native bf16 matmuls it is several times slower
    Variant("bf16", "baseline + bf16 autocast on the CPU", {**BASE, "cpu_bf16": True}, 3),
    Variant("shared-pos", "baseline + one sinusoid of the largest width, sliced",
            {**BASE, "shared_positions": True}, cost_as="baseline"),
    Variant("lr2e-3", "baseline with peak lr 2e-3", {**BASE, "lr": 2e-3}, cost_as="baseline"),
    Variant("sandwich-kd", "sandwich (largest + smallest + 2 random) + in-place distillation "
            "(weight 1), 170 updates", {**SANDWICH, "distill_weight": 1.0}, 4),
    Variant("sandwich", "sandwich rule (largest + smallest + 2 random), 170 updates",
            SANDWICH, 4),
]
BY_NAME = {v.name: v for v in VARIANTS}


def settings_for(variant: Variant, args: argparse.Namespace, run_dir: Path,
                 *, resume: bool = True, max_updates: int | None = None):
    """The run settings of `variant` (the stored ones when `run_dir` already holds it)."""
    overrides = {"valid_sentences": args.valid_sentences, "validate_every": args.validate_every,
                 "save_every": args.validate_every, **variant.overrides}  # variants may override
    overrides["schedule_updates"] = variant.overrides["max_updates"]
    if max_updates is not None:
        overrides["max_updates"] = max_updates
    stored = resume and (run_dir / "run.json").is_file()  # a resumed run keeps its options
    return resolve_run(run_dir, kind="supernet", resume=resume, preset=None if stored else "demo",
                       overrides=overrides, data_dir=args.data, space=args.space)


def part_train(args: argparse.Namespace, variants: list[Variant]) -> None:
    for v in variants:
        run_dir = Path(args.out) / "runs" / v.name
        stop = None
        if args.stop_at:  # a fraction of the schedule: the run can be resumed to its end
            stop = max(1, round(v.overrides["max_updates"] * args.stop_at))
        settings = settings_for(v, args, run_dir, max_updates=stop)
        start = time.perf_counter()
        result = train_supernet(settings, run_dir, resume=True, device="cpu",
                                progress=args.progress)
        print(json.dumps({"variant": v.name, "updates": result.update,
                          "train_seconds_this_call": round(result.train_seconds, 1),
                          "wall_seconds": round(time.perf_counter() - start, 1),
                          "load_avg": os.getloadavg()[0]}), flush=True)


def time_variant(v: Variant, args: argparse.Namespace, updates: int) -> float:
    """Seconds per update of `v`'s first `updates` updates from a fresh model."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(v, args, Path(tmp), resume=False, max_updates=updates)
        settings = type(settings)(**{**settings.__dict__, "options": settings.options.override(
            {"validate_every": 0, "save_every": 0})})
        result = train_supernet(settings, tmp, device="cpu", progress=False)
    return result.train_seconds / result.update


def part_speed(args: argparse.Namespace, variants: list[Variant]) -> dict[str, Any]:
    counts = {v.name: v.speed_updates or args.speed_updates for v in variants}
    for v in variants:  # warm-up: first-call costs (allocator, kernels)
        time_variant(v, args, 2)
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    loads = []
    for rep in range(args.repeats):
        order = variants if rep % 2 == 0 else list(reversed(variants))
        loads.append(os.getloadavg()[0])
        for v in order:
            samples[v.name].append(time_variant(v, args, counts[v.name]))
            print(f"speed repeat {rep} {v.name}: {samples[v.name][-1]:.3f} s/update",
                  flush=True)
    out = {"seconds_per_update": {k: statistics.median(s) for k, s in samples.items()},
           "samples": samples, "updates_timed": counts, "load_avg_per_repeat": loads,
           "threads": torch.get_num_threads(), **machine()}
    path = Path(args.out) / "speed.json"
    old = read_json(path) if path.exists() else {}
    for key in ("seconds_per_update", "samples", "updates_timed"):  # keep other variants
        out[key] = {**old.get(key, {}), **out[key]}
    atomic_write_json(path, out, indent=1)
    return out


def machine() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "torch": torch.__version__, "commit": commit}


def read_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(update, mean probe dev NLL) per validation of a run."""
    by_update: dict[int, list[float]] = {}
    with open(run_dir / "valid_log.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            by_update.setdefault(int(row["update"]), []).append(float(row["nll"]))
    return [(u, sum(v) / len(v)) for u, v in sorted(by_update.items())]


def read_probes(run_dir: Path) -> dict[str, float]:
    """Dev NLL of each probe at the run's last validation."""
    with open(run_dir / "valid_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["update"]) for r in rows)
    return {r["probe"]: round(float(r["nll"]), 4) for r in rows if int(r["update"]) == last}


def first_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """Smallest x where the piecewise-linear curve (x, loss) reaches `target`."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if y0 <= target:
            return x0
        if y1 <= target:
            return x0 + (x1 - x0) * (y0 - target) / (y0 - y1)
    return curve[0][0] if curve and curve[0][1] <= target else None


def part_report(args: argparse.Namespace, variants: list[Variant]) -> dict[str, Any]:
    out = Path(args.out)
    speed = read_json(out / "speed.json")
    spu = dict(speed["seconds_per_update"])
    groups: dict[str, list[str]] = {}
    for v in variants:
        if v.name in spu:
            groups.setdefault(v.cost_as or v.name, []).append(v.name)
    for members in groups.values():  # equal arithmetic: pool the interleaved samples
        pooled = statistics.median(x for m in members for x in speed["samples"][m])
        for m in members:
            spu[m] = pooled
    curves = {v.name: read_curve(out / "runs" / v.name) for v in variants
              if (out / "runs" / v.name / "valid_log.csv").exists() and v.name in spu}
    if "baseline" not in curves:
        raise SystemExit("report needs the baseline's curve and speed")
    target = curves["baseline"][-1][1]
    base_min = first_reach([(u * spu["baseline"] / 60, y) for u, y in curves["baseline"]],
                           target)
    rows = []
    with open(out / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "update", "minutes", "mean_probe_nll", "mean_probe_ppl"])
        for name, curve in curves.items():
            for u, y in curve:
                w.writerow([name, u, round(u * spu[name] / 60, 3), round(y, 4),
                            round(2.718281828459045 ** y, 1)])
    for name, curve in curves.items():
        minutes = [(u * spu[name] / 60, y) for u, y in curve]
        reach = first_reach(minutes, target)
        rows.append({"variant": name, "text": BY_NAME[name].text,
                     "s_per_update": round(spu[name], 3), "updates": curve[-1][0],
                     "minutes": round(minutes[-1][0], 2), "final_nll": round(curve[-1][1], 4),
                     "minutes_to_baseline_final": None if reach is None else round(reach, 2),
                     "speedup_vs_baseline": (None if reach is None or not base_min
                                             else round(base_min / reach, 2)),
                     "probes_final_nll": read_probes(out / "runs" / name)})
    summary = {"target_nll": round(target, 4), "rows": rows, "speed": speed,
               "seconds_per_update_used": spu, "pooled": list(groups.values())}
    atomic_write_json(out / "summary.json", summary, indent=1)
    print("| variant | s/update | updates | minutes | final mean probe NLL (ppl) | "
          "minutes to baseline's final NLL | x baseline |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['s_per_update']:.3f} | {r['updates']} | {r['minutes']:.1f} | "
              f"{r['final_nll']:.3f} ({2.718281828459045 ** r['final_nll']:.0f}) | "
              f"{r['minutes_to_baseline_final'] if r['minutes_to_baseline_final'] is not None else '-'} | "
              f"{r['speedup_vs_baseline'] if r['speedup_vs_baseline'] is not None else '-'} |")
    plot(curves, spu, target, out / "quality_per_minute.png")
    return summary


def plot(curves: dict[str, list[tuple[int, float]]], spu: dict[str, float], target: float,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in curves.items():
        style = dict(marker="o", ms=3, lw=2.2 if name == "baseline" else 1.4,
                     color="black" if name == "baseline" else None)
        axes[0].plot([u for u, _ in curve], [y for _, y in curve], label=name, **style)
        axes[1].plot([u * spu[name] / 60 for u, _ in curve], [y for _, y in curve],
                     label=name, **style)
    for ax, xlabel in zip(axes, ("update", "minutes of training (1 thread)"), strict=True):
        ax.axhline(target, color="grey", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean probe dev NLL (nats/token)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("demo supernet on bible-en-de: dev NLL of the probe subnets")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="prepared data dir (bible-en-de)")
    p.add_argument("--out", required=True, help="output dir (runs/, speed.json, curves.csv)")
    p.add_argument("--space", default="demo")
    p.add_argument("--part", choices=("train", "speed", "report", "all"), default="all")
    p.add_argument("--variants", default=",".join(BY_NAME),
                   help=f"comma-separated subset of {list(BY_NAME)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--valid-sentences", type=int, default=300)
    p.add_argument("--validate-every", type=int, default=50)
    p.add_argument("--speed-updates", type=int, default=10,
                   help="updates timed per repeat (variants may set their own)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stop-at", type=float, default=0.0, metavar="FRACTION",
                   help="train only this fraction of each variant's schedule (resume later "
                        "with a larger fraction or 0 = to the end)")
    p.add_argument("--progress", action="store_true", help="tqdm bars while training")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(BY_NAME)}")
    variants = [BY_NAME[n] for n in names]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.part in ("train", "all"):
        part_train(args, variants)
    if args.part in ("speed", "all"):
        part_speed(args, variants)
    if args.part in ("report", "all"):
        part_report(args, [v for v in VARIANTS])


if __name__ == "__main__":
    main()
