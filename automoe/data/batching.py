"""Token-budget batching with length bucketing, seeded shuffling, resume and sharding.

Per epoch, sentences are sorted by length (ties broken by a permutation drawn from an
explicit ``numpy.random.Generator`` seeded with ``(seed, epoch)``) and cut greedily into
batches whose padded size ``B * max(S, T)`` stays within ``max_tokens`` (S counts the source's
EOS, T the target's BOS/EOS); the batch order is then shuffled with the same generator.
The plan is a pure function of (data, seed, epoch, options), so a run that saved
``state_dict()`` (epoch + step) resumes with exactly the remaining batches.

Data parallel: every rank builds the same plan and takes batch ``step * world_size + rank``.
If the count is not a multiple of world_size, the largest batches are halved until it is,
so each step gives every rank one batch and every sentence is still used exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from automoe.data.store import Ragged
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID

__all__ = ["Batch", "TokenBatcher", "collate"]


class Batch(NamedTuple):
    """One padded batch (all LongTensors, padded with PAD_ID on the right). Read it by field
    name (``batch.src``): fields may be added at the end.

    Attributes:
        src: [B, S] source ids, each row ending in EOS (a multilingual row starts with its
            task's tag id).
        prev: [B, T] decoder input, BOS + target ids.
        target: [B, T] labels, target ids + EOS.
        ids: [B] the sentences' indices in their split (to restore corpus order).
        tasks: [B] the sentences' task ids (target languages) of multilingual data; None for
            monolingual data.
    """

    src: torch.Tensor
    prev: torch.Tensor
    target: torch.Tensor
    ids: torch.Tensor
    tasks: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """This batch with every tensor on `device`."""
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(move(self.src), move(self.prev), move(self.target), move(self.ids),
                     None if self.tasks is None else move(self.tasks))

    @property
    def src_padding_mask(self) -> torch.Tensor:
        """[B, S] bool, True at padding."""
        return self.src.eq(PAD_ID)

    @property
    def num_tokens(self) -> int:
        """Target tokens that carry a label (EOS included)."""
        return int(self.target.ne(PAD_ID).sum())


def _gather(data: Ragged, ids: np.ndarray, lead: int) -> tuple[np.ndarray, np.ndarray]:
    """[B, lead + max_len + 1] int64 PAD-filled, sentence ids placed from column `lead`, and
    the lengths [B]; one vectorised gather from the (memory-mapped) flat array."""
    offsets = data.offsets
    starts = np.asarray(offsets[ids], dtype=np.int64)
    lengths = np.asarray(offsets[ids + 1], dtype=np.int64) - starts
    width = int(lengths.max()) if len(ids) else 0
    cols = np.arange(width)
    mask = cols[None, :] < lengths[:, None]
    out = np.full((len(ids), lead + width + 1), PAD_ID, dtype=np.int64)
    out[:, lead:lead + width][mask] = np.asarray(data.flat)[(starts[:, None] + cols)[mask]]
    return out, lengths


def collate(src: Ragged, tgt: Ragged | None, ids: np.ndarray,
            tasks: np.ndarray | None = None) -> Batch:
    """Pads sentences `ids` of (src, tgt) into a Batch; with tgt None, prev/target are [B, 0].
    `tasks` ([n] task ids of the whole split, or None) gives the batch's ``tasks`` [B]."""
    ids = np.asarray(ids, dtype=np.int64)
    rows = np.arange(len(ids))
    task_ids = None if tasks is None else torch.from_numpy(np.asarray(tasks[ids], dtype=np.int64))
    src_arr, src_len = _gather(src, ids, 0)
    src_arr[rows, src_len] = EOS_ID
    if tgt is None:
        empty = torch.zeros((len(ids), 0), dtype=torch.long)
        return Batch(torch.from_numpy(src_arr), empty, empty.clone(), torch.from_numpy(ids),
                     task_ids)
    prev, tgt_len = _gather(tgt, ids, 1)  # [B, 1 + T']: BOS, ids, PAD...
    prev[:, 0] = BOS_ID
    target = np.full_like(prev, PAD_ID)
    target[:, :-1] = prev[:, 1:]
    target[rows, tgt_len] = EOS_ID
    prev = prev[:, :-1]  # drop the last column: prev and target are both T = max_len + 1
    target = target[:, :-1]
    return Batch(torch.from_numpy(src_arr), torch.from_numpy(np.ascontiguousarray(prev)),
                 torch.from_numpy(np.ascontiguousarray(target)), torch.from_numpy(ids), task_ids)


class TokenBatcher:
    """Iterates padded batches of at most `max_tokens` padded tokens, epoch after epoch.

    Each `iter()` yields the remaining batches of the current epoch for this rank, then
    advances to the next epoch. `state_dict()` / `load_state_dict()` save and restore the
    position (epoch and step within it).

    Args:
        src, tgt: the split's sentences (`load_split(...).src/.tgt`); tgt may be None for
            source-only batching (translation).
        max_tokens: budget on B * max(S, T) per batch (padding included).
        max_sentences: cap on B (0 = none).
        shuffle: shuffle ties and batch order per epoch; False gives length-sorted batches.
        seed: seeds the per-epoch generator ``numpy.random.default_rng([seed, epoch])``.
        rank, world_size: data-parallel shard of this process.
        tasks: [n] task ids of multilingual data (`SplitData.tasks`), carried into each
            batch's ``tasks``; they do not change the plan (batches mix tasks).
    """

    def __init__(self, src: Ragged, tgt: Ragged | None, *, max_tokens: int,
                 max_sentences: int = 0, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, tasks: np.ndarray | None = None) -> None:
        if tgt is not None and len(src) != len(tgt):
            raise ValueError(f"src has {len(src)} sentences but tgt has {len(tgt)}")
        if tasks is not None and np.shape(tasks) != (len(src),):
            raise ValueError(f"tasks has shape {np.shape(tasks)}, expected ({len(src)},): one "
                             "task id per sentence")
        if len(src) == 0:
            raise ValueError("cannot batch an empty split")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        if max_sentences < 0:
            raise ValueError(f"max_sentences must be >= 0, got {max_sentences}")
        self.src, self.tgt = src, tgt
        self.tasks = None if tasks is None else np.asarray(tasks, dtype=np.int64)
        self.max_tokens, self.max_sentences = int(max_tokens), int(max_sentences)
        self.shuffle, self.seed = shuffle, int(seed)
        self.rank, self.world_size = rank, world_size
        self.sizes = src.lengths + 1
        if tgt is not None:
            self.sizes = np.maximum(self.sizes, tgt.lengths + 1)
        longest = int(self.sizes.argmax())
        if self.sizes[longest] > self.max_tokens:
            raise ValueError(f"max_tokens={max_tokens} is smaller than sentence {longest}, which "
                             f"needs {int(self.sizes[longest])} tokens")
        if len(src) < world_size:
            raise ValueError(f"{len(src)} sentences cannot give each of {world_size} ranks a batch")
        self.epoch = 0
        self.position = 0
        self._plan_epoch: int | None = None
        self._plan: list[np.ndarray] = []

    # ---- planning --------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """All ranks' batches of `epoch` in step order (sentence indices per batch)."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.shuffle:
            order = np.lexsort((rng.permutation(len(self.sizes)), self.sizes))
        else:
            order = np.argsort(self.sizes, kind="stable")
        bounds = self._cut(self.sizes[order])
        bounds = self._make_divisible(bounds)
        batches = [order[a:b] for a, b in bounds]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _cut(self, sorted_sizes: np.ndarray) -> list[tuple[int, int]]:
        """Greedy cut of ascending sizes: the longest batch [i, j) with (j-i)*size[j-1] <= max."""
        sizes = sorted_sizes.tolist()
        n, cap = len(sizes), self.max_tokens
        bounds = []
        i = 0
        while i < n:
            hi = min(n, i + cap // sizes[i])  # sizes ascend, so this bounds the batch
            if self.max_sentences:
                hi = min(hi, i + self.max_sentences)
            lo = i + 1  # (lo - i) * sizes[lo - 1] <= cap holds; binary search the last such j
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if (mid - i) * sizes[mid - 1] <= cap:
                    lo = mid
                else:
                    hi = mid - 1
            bounds.append((i, lo))
            i = lo
        return bounds

    def _make_divisible(self, bounds: list[tuple[int, int]]) -> list[tuple[int, int]]:
        while len(bounds) % self.world_size:
            k = max(range(len(bounds)), key=lambda t: bounds[t][1] - bounds[t][0])
            a, b = bounds[k]
            if b - a < 2:
                raise ValueError(f"cannot give {self.world_size} ranks equal batch counts: "
                                 f"{len(bounds)} single-sentence batches (raise max_tokens)")
            mid = (a + b) // 2
            bounds[k:k + 1] = [(a, mid), (mid, b)]
        return bounds

    def _rank_plan(self) -> list[np.ndarray]:
        if self._plan_epoch != self.epoch:
            self._plan = self.epoch_batches(self.epoch)[self.rank::self.world_size]
            self._plan_epoch = self.epoch
        return self._plan

    # ---- iteration / state -----------------------------------------------------------------

    def __len__(self) -> int:
        """Steps (batches for this rank) in the current epoch."""
        return len(self._rank_plan())

    def __iter__(self) -> Iterator[Batch]:
        plan = self._rank_plan()
        while self.position < len(plan):
            ids = plan[self.position]
            self.position += 1  # a state_dict taken now resumes after this batch
            yield collate(self.src, self.tgt, ids, self.tasks)
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "max_tokens": self.max_tokens, "max_sentences": self.max_sentences,
                "world_size": self.world_size, "shuffle": self.shuffle,
                "num_sentences": len(self.sizes)}

    def load_state_dict(self, state: dict) -> None:
        """Restores epoch and position; the options must match the ones saved."""
        for key in ("seed", "max_tokens", "max_sentences", "world_size", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"batcher state has {key}={state[key]!r} but this batcher has "
                                 f"{getattr(self, key)!r}; resuming would give other batches")
        if state.get("num_sentences", len(self.sizes)) != len(self.sizes):
            raise ValueError(f"batcher state is for {state['num_sentences']} sentences, this "
                             f"split has {len(self.sizes)}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if not 0 <= self.position <= len(self._rank_plan()):
            raise ValueError(f"batcher state position {self.position} is outside epoch "
                             f"{self.epoch}'s {len(self._rank_plan())} steps")
