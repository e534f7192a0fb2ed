"""TokenBatcher invariants: coverage, budget, padding layout, resume, sharding, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automoe.data import Ragged, TokenBatcher, collate
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID


def random_corpus(n: int, seed: int, max_len: int = 40) -> tuple[Ragged, Ragged]:
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, 100, size=rng.integers(1, max_len)) for _ in range(n)]
    tgt = [rng.integers(4, 100, size=rng.integers(1, max_len)) for _ in range(n)]
    return Ragged.from_lists(src), Ragged.from_lists(tgt)


def epoch_ids(batches) -> list[list[int]]:
    return [b.ids.tolist() for b in batches]


@pytest.mark.parametrize("max_tokens, max_sentences", [(64, 0), (300, 0), (1000, 7)])
def test_each_sentence_once_budget_respected_and_layout(max_tokens, max_sentences):
    src, tgt = random_corpus(500, seed=max_tokens)
    batcher = TokenBatcher(src, tgt, max_tokens=max_tokens, max_sentences=max_sentences, seed=3)
    seen = []
    for batch in batcher:
        b, s = batch.src.shape
        t = batch.prev.shape[1]
        assert batch.target.shape == (b, t) and batch.src.dtype == torch.long
        assert b * max(s, t) <= max_tokens
        assert not max_sentences or b <= max_sentences
        for row, i in enumerate(batch.ids.tolist()):
            n, m = len(src[i]), len(tgt[i])
            assert batch.src[row].tolist() == [*src[i], EOS_ID] + [PAD_ID] * (s - n - 1)
            assert batch.prev[row].tolist() == [BOS_ID, *tgt[i]] + [PAD_ID] * (t - m - 1)
            assert batch.target[row].tolist() == [*tgt[i], EOS_ID] + [PAD_ID] * (t - m - 1)
        assert torch.equal(batch.src_padding_mask, batch.src == PAD_ID)
        assert batch.num_tokens == int((tgt.lengths[batch.ids.numpy()] + 1).sum())
        seen += batch.ids.tolist()
    assert sorted(seen) == list(range(500))
    assert batcher.epoch == 1 and batcher.position == 0


def test_unshuffled_batches_are_length_sorted_and_greedily_full():
    src, tgt = random_corpus(400, seed=1)
    batcher = TokenBatcher(src, tgt, max_tokens=256, shuffle=False)
    sizes = np.maximum(src.lengths, tgt.lengths) + 1
    batches = batcher.epoch_batches(0)
    flat = np.concatenate(batches)
    assert (np.diff(sizes[flat]) >= 0).all()  # buckets: ascending lengths
    for cur, nxt in zip(batches, batches[1:], strict=False):
        # Maximal: adding the next sentence would break the budget.
        assert (len(cur) + 1) * sizes[nxt[0]] > 256
    assert epoch_ids(TokenBatcher(src, tgt, max_tokens=256, shuffle=False)) == [
        b.tolist() for b in batches]


def test_shuffling_is_seeded_per_epoch():
    src, tgt = random_corpus(300, seed=2)
    a = TokenBatcher(src, tgt, max_tokens=200, seed=7)
    b = TokenBatcher(src, tgt, max_tokens=200, seed=7)
    c = TokenBatcher(src, tgt, max_tokens=200, seed=8)
    e0, e1 = epoch_ids(a), epoch_ids(a)
    assert e0 == epoch_ids(b) and e1 == epoch_ids(b)
    assert e0 != e1 and e0 != epoch_ids(c)
    assert sorted(sum(e1, [])) == list(range(300))


def test_resume_mid_epoch_yields_the_same_remaining_batches():
    src, tgt = random_corpus(400, seed=4)
    reference = TokenBatcher(src, tgt, max_tokens=150, seed=5)
    epoch_ids(reference)  # epoch 0
    full = epoch_ids(reference)  # epoch 1
    run = TokenBatcher(src, tgt, max_tokens=150, seed=5)
    epoch_ids(run)
    it = iter(run)
    first = [next(it).ids.tolist() for _ in range(4)]
    state = run.state_dict()
    assert (state["epoch"], state["position"]) == (1, 4)
    resumed = TokenBatcher(src, tgt, max_tokens=150, seed=5)
    resumed.load_state_dict(state)
    assert len(resumed) == len(full)
    assert first + epoch_ids(resumed) == full
    assert resumed.epoch == 2


def test_state_from_other_options_is_refused():
    src, tgt = random_corpus(50, seed=6)
    state = TokenBatcher(src, tgt, max_tokens=150, seed=5).state_dict()
    with pytest.raises(ValueError, match="seed=5"):
        TokenBatcher(src, tgt, max_tokens=150, seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match="max_tokens=150"):
        TokenBatcher(src, tgt, max_tokens=100, seed=5).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_get_disjoint_equal_shares(world_size):
    src, tgt = random_corpus(301, seed=world_size)
    for epoch in range(2):
        per_rank = []
        for rank in range(world_size):
            batcher = TokenBatcher(src, tgt, max_tokens=120, seed=9, rank=rank,
                                   world_size=world_size)
            batcher.load_state_dict({"epoch": epoch, "position": 0})
            per_rank.append(epoch_ids(batcher))
        assert len({len(r) for r in per_rank}) == 1  # one batch per rank per step
        everything = [i for r in per_rank for b in r for i in b]
        assert sorted(everything) == list(range(301))  # disjoint and complete
        for r in per_rank:
            for ids in r:
                size = max(np.maximum(src.lengths, tgt.lengths)[ids] + 1)
                assert len(ids) * size <= 120


def test_bad_options_are_refused():
    src, tgt = random_corpus(20, seed=1, max_len=40)
    with pytest.raises(ValueError, match="smaller than sentence"):
        TokenBatcher(src, tgt, max_tokens=10)
    with pytest.raises(ValueError, match="rank"):
        TokenBatcher(src, tgt, max_tokens=100, rank=2, world_size=2)
    with pytest.raises(ValueError, match="20 sentences but tgt has 19"):
        TokenBatcher(src, Ragged.from_lists([tgt[i] for i in range(19)]), max_tokens=100)


def test_source_only_collate():
    src = Ragged.from_lists([[5, 6, 7], [8]])
    batch = collate(src, None, np.array([1, 0]))
    assert batch.src.tolist() == [[8, EOS_ID, PAD_ID, PAD_ID], [5, 6, 7, EOS_ID]]
    assert batch.prev.shape == (2, 0)
