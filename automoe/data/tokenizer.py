"""Joint SentencePiece (BPE) tokenizer with the system's fixed special ids.

One model is trained on both sides of the training split, so source and target share a
vocabulary (and the model can tie embeddings). PAD=0, UNK=1, BOS=2, EOS=3, matching
`supernet.tokens`. `encode` returns ids without specials; the batcher adds EOS to the
source and BOS/EOS to the target, so stored ids stay the plain sentence. A multilingual
model also holds one user-defined symbol per target language (``<2de>``, ids 4, 5, ...),
which `prepare` puts in front of every source sentence.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from automoe.io_utils import atomic_path
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID

__all__ = ["Tokenizer", "train_tokenizer"]

# `automoe.data.store.task_tag` of a language code (`automoe.data.store.check_tasks`)
_TAG = re.compile(r"<2([A-Za-z][A-Za-z0-9_-]{0,31})>")


class Tokenizer:
    """A loaded SentencePiece model: text <-> ids (ids exclude BOS/EOS)."""

    def __init__(self, model_proto: bytes, *, source: str = "<memory>") -> None:
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as err:
            raise ValueError(f"{source}: not a SentencePiece model ({err})") from err
        got = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        want = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
        if got != want:
            raise ValueError(f"{source}: special ids (pad, unk, bos, eos) are {got}, "
                             f"expected {want}")
        self._proto = model_proto
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / "spm.model"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model {path} does not exist")
        return cls(path.read_bytes(), source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(self._proto)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def piece_id(self, piece: str) -> int:
        """The id of a whole piece (a task tag ``<2de>``); ValueError if the model lacks it."""
        i = self._sp.piece_to_id(piece)
        if i == UNK_ID and piece != self._sp.id_to_piece(UNK_ID):
            raise ValueError(f"{self.source}: no piece {piece!r} in the vocabulary")
        return int(i)

    def tasks(self) -> dict[str, int]:
        """The target languages this vocabulary has a tag for, with the tag's id ({} for a
        bilingual model), in id order."""
        sp = self._sp
        # (sentencepiece's Python API cannot tell a user symbol; a tag is a whole piece)
        return {m.group(1): i for i in range(sp.get_piece_size())
                if (m := _TAG.fullmatch(sp.id_to_piece(i)))}

    def task_id(self, task: str) -> int:
        """The id of ``task``'s tag (the token that starts its source sentences);
        ValueError naming the task and the tasks this vocabulary has."""
        tasks = self.tasks()
        if task not in tasks:
            have = ", ".join(tasks) if tasks else "none (a bilingual model)"
            raise ValueError(f"{self.source}: no target language {task!r}; it has {have}")
        return tasks[task]

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenised text; PAD/BOS/EOS are dropped, UNK becomes SentencePiece's ' ⁇ '."""
        return self._sp.decode([int(i) for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])


def train_tokenizer(sentences: Iterable[str], *, vocab_size: int,
                    character_coverage: float = 1.0, num_threads: int = 2,
                    user_symbols: Sequence[str] = ()) -> Tokenizer:
    """Trains a BPE SentencePiece model in memory on `sentences` (both languages mixed).

    The vocabulary may come out smaller than `vocab_size` on a tiny corpus (hard_vocab_limit
    is off); `Tokenizer.vocab_size` is the real size. `user_symbols` (task tags) become whole
    pieces right after the specials (ids 4, 5, ...), counted in `vocab_size`.
    """
    if vocab_size < 8 + len(user_symbols):
        raise ValueError(f"vocab_size must be >= {8 + len(user_symbols)}"
                         f"{' (8 + one per task tag)' if user_symbols else ''}, got {vocab_size}")
    extra: dict[str, Any] = {"user_defined_symbols": list(user_symbols)} if user_symbols else {}
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, model_type="bpe",
            vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=character_coverage,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            input_sentence_size=0, shuffle_input_sentence=False, num_threads=num_threads,
            max_sentence_length=1 << 16, minloglevel=2, **extra,
        )
    except RuntimeError as err:
        raise ValueError(f"SentencePiece training failed: {err}") from err
    return Tokenizer(model.getvalue(), source="<trained>")
