"""The supernet checkpoint: read once, checked, and rebuilt into a model in one place.

`read_supernet(path)` reads a supernet run dir (its ``checkpoint_last.pt``) or checkpoint
file into a `SupernetCheckpoint`: its space (rebuilt from the checkpoint, no YAML needed),
vocabulary, model options, training update and loss epsilon, sha256, and the weights as
numpy arrays (what the search ships to its workers through Ray's object store). The weights
are loaded into the supernet of its space while reading, so a checkpoint that does not fit
its space fails there, with a ValueError naming the file.

`SupernetCheckpoint.build_model(device)` is the one way back to a model: the eval-mode
`SuperTransformer` of the checkpoint's space and options holding its weights. Every reader
(the search's scorers, the task server, fidelity, export, retraining's ``--init-from``,
the benchmark scripts) goes through it or through `load_supernet`, which reads a file and
keeps the model built while checking it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from automoe.io_utils import file_sha256
from search_spaces.space import SearchSpace, check_precision_variant, load_space
from supernet.options import ModelOptions
from supernet.supertransformer import SuperTransformer
from supernet.training.checkpoint import load_checkpoint

__all__ = ["SupernetCheckpoint", "read_supernet", "load_supernet", "with_space"]


@dataclass(frozen=True)
class SupernetCheckpoint:
    """A supernet checkpoint, read and checked.

    Attributes:
        file: the checkpoint file.
        space: its `SearchSpace` (rebuilt from the checkpoint, no YAML needed).
        vocab_size: joint vocabulary size.
        options: `ModelOptions.to_dict()` of the trained model.
        update: training updates done.
        label_smoothing: the training loss's epsilon (the dev ``loss`` uses it too).
        sha256: of the file (the run's identity in search.json).
        state: the weights as numpy arrays (shared through Ray's object store; may be
            read-only there).
    """

    file: Path
    space: SearchSpace
    vocab_size: int
    options: dict[str, Any]
    update: int
    label_smoothing: float
    sha256: str
    state: dict[str, np.ndarray]

    def identity(self) -> dict[str, Any]:
        return {"checkpoint": str(self.file.resolve()), "sha256": self.sha256,
                "update": self.update, "vocab_size": self.vocab_size,
                "space": self.space.name, "model_options": self.options,
                "label_smoothing": self.label_smoothing}

    def build_model(self, device: str | torch.device = "cpu") -> SuperTransformer:
        """The `SuperTransformer` of this checkpoint's space and model options holding its
        weights, on ``device``, in eval mode."""
        with warnings.catch_warnings():  # object-store arrays are read-only; load_state_dict copies
            warnings.simplefilter("ignore", UserWarning)
            state = {k: torch.from_numpy(v) for k, v in self.state.items()}
        return _build(self.space, self.vocab_size, self.options, state,
                      source=str(self.file)).to(device).eval()

    def without_weights(self) -> SupernetCheckpoint:
        """This record with no weights (``state`` empty): what travels beside the weights
        when these go through Ray's object store."""
        return dataclasses.replace(self, state={})

    def with_weights(self, state: dict[str, np.ndarray]) -> SupernetCheckpoint:
        """This record holding the weights ``state``."""
        return dataclasses.replace(self, state=state)


def _build(space: SearchSpace, vocab_size: int, options: dict[str, Any],
           state: dict[str, torch.Tensor], *, source: str) -> SuperTransformer:
    """The supernet of ``space`` with the stored model options and ``state`` loaded (CPU,
    eval mode); a ValueError naming ``source`` when the weights do not fit it."""
    model = SuperTransformer(space, vocab_size,
                             options=ModelOptions.from_dict(options, source=source))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{source}: the weights do not fit the supernet of space "
                         f"{space.name!r} ({str(err).strip()[:400]})") from None
    return model.eval()


def _read(path: str | Path, which: str) -> tuple[SupernetCheckpoint, SuperTransformer]:
    """The record of ``path`` (see `read_supernet`) and the CPU eval-mode supernet built
    while checking it; the record's arrays share the model's memory."""
    path = Path(path)
    file = path / f"checkpoint_{which}.pt" if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise FileNotFoundError(f"{path}: no {file.name} (is this a supernet run dir? "
                                "train one with `automoe supernet train`)")
    entries = load_checkpoint(file, expect={"kind": "supernet"})
    for key in ("space", "vocab_size", "model_options", "model"):
        if key not in entries:
            raise ValueError(f"{file}: supernet checkpoint has no {key!r} entry")
    space = SearchSpace.from_dict(entries["space"], source=f"{file} (space)")
    options = dict(entries["model_options"])
    model = _build(space, int(entries["vocab_size"]), options, entries.pop("model"),
                   source=str(file))
    train_config = entries.get("train_config") or {}
    arrays = {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype)
              .contiguous().numpy() for k, v in model.state_dict().items()}
    record = SupernetCheckpoint(
        file=file, space=space, vocab_size=model.vocab_size, options=options,
        update=int(entries.get("update", -1)),
        label_smoothing=float(train_config.get("label_smoothing", 0.1)),
        sha256=file_sha256(file), state=arrays)
    return record, model


def read_supernet(path: str | Path, *, which: str = "last") -> SupernetCheckpoint:
    """The one reader of supernet checkpoints: ``path`` is a run dir (its
    ``checkpoint_{which}.pt``) or a checkpoint file. Its weights are checked against the
    supernet of its space here (a ValueError naming the file when they do not fit)."""
    return _read(path, which)[0]


def load_supernet(path: str | Path, *, which: str = "last",
                  device: str | torch.device = "cpu") -> tuple[SuperTransformer, SearchSpace]:
    """The trained supernet of a run dir (``checkpoint_{which}.pt``) or a checkpoint file,
    on ``device`` in eval mode, with its search space (`read_supernet`; the model is the
    one built while checking the file, not a second copy)."""
    record, model = _read(path, which)
    return model.to(device).eval(), record.space


def with_space(checkpoint: SupernetCheckpoint, space: str) -> SupernetCheckpoint:
    """``checkpoint`` searched over the space ``space`` (name or YAML) instead of its own;
    ValueError unless the two differ only in ``expert_bits``
    (`search_spaces.space.check_precision_variant`)."""
    variant = load_space(space)
    check_precision_variant(checkpoint.space, variant,
                            source=f"--space {space} on supernet {checkpoint.file}")
    return dataclasses.replace(checkpoint, space=variant)
