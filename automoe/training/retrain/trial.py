"""The Tune trial of `automoe retrain`: one subnet trained from scratch in chunks, with a Tune
checkpoint per chunk, then scored on the test split.

`retrain_trial` is a function trainable. It trains with the loop of `automoe train`
(`automoe.training.runs.fit_subnet`) up to the next multiple of ``report_every`` updates (a chunk
ends right after a validation), reports ``updates``, ``dev_loss`` (of that validation) and
``best_dev_loss`` with a Tune checkpoint of the run dir's training state (``run.json``,
``checkpoint_last.pt``, ``checkpoint_best.pt``, the update checkpoints, the logs), and
goes on. The loop's resume is exact, so a trial restored from its Tune checkpoint (Tune's
retry after a failure) first makes its run dir hold
exactly that state and then ends with the weights of an uninterrupted run. After the last
chunk it chooses the final weights, saves the model and scores test BLEU/chrF by beam search
(`automoe.training.runs.finish_subnet`), and reports them with the last metrics.

The run dir is ``job.models_dir/<key>`` (a stable place: a restored trial finds it); its
``model/`` is the exported model. With ``job.continue_run_dirs`` (``retrain --resume``,
a fresh Tune experiment) a trial without a Tune checkpoint continues from its run dir's own
``checkpoint_last.pt`` instead of starting over.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray.tune import Callback

from automoe.training.retrain.settings import TrialJob

__all__ = ["retrain_trial", "trial_dirname", "Progress"]


_RUN_FILES = ("run.json", "checkpoint_last.pt", "checkpoint_best.pt", "train_log.csv",
              "valid_log.csv")


def _state_files(out: Path, *, update_checkpoints: bool) -> list[Path]:
    files = [out / name for name in _RUN_FILES if (out / name).exists()]
    # the model-only update checkpoints matter only to --average-last
    return files + (sorted(out.glob("checkpoint_[0-9]*.pt")) if update_checkpoints else [])


def _snapshot(out: Path, into: Path, *, update_checkpoints: bool) -> Any:
    """A Tune checkpoint of run dir `out`'s training state (hard links where possible;
    Tune copies it into its storage)."""
    from ray import tune

    for src in _state_files(out, update_checkpoints=update_checkpoints):
        try:
            os.link(src, into / src.name)
        except OSError:
            shutil.copyfile(src, into / src.name)
    return tune.Checkpoint.from_directory(str(into))


def _restore_run_dir(src: Path | None, out: Path) -> None:
    """Makes run dir `out` hold exactly the training state of Tune checkpoint `src` (None:
    a fresh start): whatever the trial wrote after its last reported checkpoint is dropped,
    so the replay is the uninterrupted run (the logs are cut back by the loop itself)."""
    if src is None:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("checkpoint*.pt")) + [out / "results.json"]:
        stale.unlink(missing_ok=True)
    shutil.rmtree(out / "model", ignore_errors=True)
    for file in sorted(src.iterdir()) if src is not None else ():
        shutil.copyfile(file, out / file.name)


def _update_of(out: Path) -> int:
    from supernet.training.checkpoint import load_checkpoint

    last = out / "checkpoint_last.pt"
    return int(load_checkpoint(last)["update"]) if last.exists() else 0


def retrain_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: trains and scores subnet ``config["key"]`` of
    ``config["job"]`` (a `TrialJob`'s dict; see module)."""
    import torch
    from ray import tune

    from automoe.training.runs import RunSettings, finish_subnet, fit_subnet

    job, key = TrialJob.from_dict(config["job"]), config["key"]
    torch.set_num_threads(job.cpus)
    device = "cuda" if job.gpus > 0 else "cpu"
    out = Path(job.models_dir) / key
    settings = RunSettings(kind="subnet", data_dir=job.data_dir, options=job.options,
                           subnet=job.configs[key])
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and job.continue_run_dirs and (out / "checkpoint_last.pt").exists():
        pass  # `retrain --resume`: the run dir's own state, exact resume by the loop
    elif checkpoint is None:
        _restore_run_dir(None, out)
    else:
        with checkpoint.as_directory() as src:
            _restore_run_dir(Path(src), out)
    total, every = settings.options.max_updates, job.report_every
    keep = job.average_last > 0
    done = _update_of(out)
    while True:  # chunks end at multiples of `every`: each has just validated
        stop = min(total, (done // every + 1) * every)
        chunk = dataclasses.replace(settings, options=settings.options.override(
            {"max_updates": stop}))
        result = fit_subnet(chunk, out, resume=True, device=device, progress=False)
        done = result.update
        valid = result.last_valid.get("model")
        metrics = {"updates": done, "dev_loss": valid.loss if valid else float("nan"),
                   "best_dev_loss": result.best_loss}
        if done >= total:
            break
        with tempfile.TemporaryDirectory() as tmp:
            tune.report(metrics, checkpoint=_snapshot(out, Path(tmp), update_checkpoints=keep))
    summary = finish_subnet(settings, out, result, average_last=job.average_last,
                            beam=job.beam, lenpen=job.lenpen,
                            test_sentences=job.test_sentences, device=device, progress=False)
    test = summary["test"]
    final = {**metrics, "bleu_retrained": test["bleu"], "chrf_retrained": test["chrf"],
             "test_sentences": test["sentences"], "bleu_signature": test["signatures"]["bleu"],
             "weights": summary["weights"], "model_dir": summary["model_dir"],
             "device": f"{device} ({job.cpus} torch threads)" if device == "cpu" else device}
    with tempfile.TemporaryDirectory() as tmp:
        tune.report(final, checkpoint=_snapshot(out, Path(tmp), update_checkpoints=keep))


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.config['key']}"


class Progress(Callback):
    """Tune callback: one tqdm bar over the updates of all trials (driver side)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.bar = total, enabled, None
        self.seen: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks (tuner.pkl)
        return {"total": self.total, "enabled": self.enabled, "bar": None, "seen": {}}

    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        import sys

        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc="retrain", unit="upd", file=sys.stderr,
                        disable=not self.enabled, dynamic_ncols=True)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        for trial in trials:  # once per trial: what a restored job had done already
            key = trial.config["key"]
            if key not in self.seen:
                self.seen[key] = int((trial.last_result or {}).get("updates", 0))
                if self.bar is not None:
                    self.bar.update(self.seen[key])

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        key, done = trial.config["key"], int(result.get("updates", 0))
        if self.bar is not None:
            self.bar.update(max(0, done - self.seen.get(key, 0)))
            self.bar.set_postfix(trial=key[:8], dev_loss=f"{result.get('dev_loss', 0):.3f}")
        self.seen[key] = done

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.bar is not None:
            self.bar.close()
