"""Greedy and batched beam search on the seq2seq protocol of docs/contracts.md.

Works on any `supernet.contracts.Seq2SeqModel` (``encode(src) -> enc``, ``decode(prev, enc,
cache=cache) -> (logits, aux)``, ``new_cache()``, ``enc.index_select(order)``,
``cache.reorder(order)``, ``training``/``eval()``/``train()``): the supernet's bound view
(`SuperTransformer.bind(subnet)`) and the exported `Transformer` alike.
Decoding is incremental: each step feeds only the last token [B', 1] and reuses the cache.

Conventions (fairseq / HAT): the source rows end with EOS and are right-padded with PAD;
PAD and BOS are never generated; a sentence may generate at most
``floor(max_len_a * src_len + max_len_b)`` tokens (EOS included; src_len counts EOS), capped
by ``max_len``, and EOS is forced at that limit. Beam search keeps `beam` live hypotheses per
sentence, finalises a hypothesis when EOS is among the top `beam` candidates, scores it
``sum(log p) / len ** lenpen`` (len includes EOS) and stops a sentence once `beam`
hypotheses are final. Finished sentences leave the batch, so work shrinks as they end.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from automoe.bleu import corpus_scores
from automoe.data.batching import collate
from automoe.data.clean import normalize_text
from automoe.data.store import Ragged, load_split
from automoe.data.tokenizer import Tokenizer
from supernet.contracts import CacheT, EncT, Seq2SeqModel
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID

if TYPE_CHECKING:
    from automoe.data.store import Ragged
    from automoe.data.tokenizer import Tokenizer

__all__ = ["Hypothesis", "NonFiniteScores", "InputTooLong", "max_positions", "greedy_decode", "beam_search", "length_limits",
           "check_decoding", "translate_ids", "translate_texts", "evaluate_split"]


class InputTooLong(ValueError):
    """A source sentence longer than the model's positions (``max_positions``)."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(f"sentence {index + 1}: {tokens} tokens with EOS, more than the "
                         f"model's max_positions ({limit})")
        self.index, self.tokens, self.limit = index, tokens, limit


def max_positions(model: Any) -> int | None:
    """The longest sequence `model` accepts: a torch model's ``options.max_positions``, an
    ONNX Runtime model's ``max_positions`` (None: unknown)."""
    options = getattr(model, "options", None)
    if options is not None and hasattr(options, "max_positions"):
        return int(options.max_positions)
    limit = getattr(model, "max_positions", None)
    return None if limit is None else int(limit)


class NonFiniteScores(ValueError):
    """The model gave NaN or infinite scores: its weights are damaged (decoding on would
    print garbage, or fail where no hypothesis has a finite score)."""


class Hypothesis(NamedTuple):
    """A decoded sentence: ids without BOS/EOS, its length-normalised score and log-prob."""

    tokens: list[int]
    score: float
    logprob: float


def length_limits(src: torch.Tensor, max_len: int | None, max_len_a: float,
                  max_len_b: int) -> torch.Tensor:
    """[B] long: tokens each sentence may generate (EOS included), at least 1."""
    src_len = src.ne(PAD_ID).sum(dim=1).double()
    limits = torch.floor(max_len_a * src_len + max_len_b).long().clamp(min=1)
    if max_len is not None:
        limits = limits.clamp(max=max(1, int(max_len)))
    return limits


@contextmanager
def _eval_mode(model: Seq2SeqModel[Any, Any]) -> Iterator[None]:
    """Dropout off while decoding; the caller's train/eval mode is restored afterwards."""
    was_training = bool(model.training)
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()


def _step_logprobs(model: Seq2SeqModel[EncT, CacheT], prev: torch.Tensor, enc: EncT,
                   cache: CacheT, force_eos: torch.Tensor) -> torch.Tensor:
    """[b, V] float32 log-probs of the next token; PAD/BOS banned, EOS forced where asked."""
    logits, _ = model.decode(prev, enc, cache=cache)
    lp = F.log_softmax(logits[:, -1].float(), dim=-1)
    # -inf marks an impossible token; NaN comes from NaN or +inf logits or a row with no
    # possible token at all
    if torch.isnan(lp).any():
        raise NonFiniteScores(f"the model's scores at decoding step {prev.shape[1]} are not "
                              "finite (NaN or infinite logits): its weights are damaged")
    lp[:, PAD_ID] = -math.inf
    lp[:, BOS_ID] = -math.inf
    if force_eos.any():
        eos = lp[force_eos, EOS_ID]
        lp[force_eos] = -math.inf
        lp[force_eos, EOS_ID] = eos
    return lp


def greedy_decode(model: Seq2SeqModel[EncT, CacheT], src: torch.Tensor,
                  max_len: int | None = None, *, max_len_a: float = 1.5,
                  max_len_b: int = 10) -> list[Hypothesis]:
    """Argmax decoding of src [B, S]; returns one Hypothesis per row (score = log-prob)."""
    batch = src.size(0)
    limits = length_limits(src, max_len, max_len_a, max_len_b).tolist()
    tokens: list[list[int]] = [[] for _ in range(batch)]
    logprob = [0.0] * batch
    with _eval_mode(model):
        enc = model.encode(src)
        cache = model.new_cache()
        active = list(range(batch))  # original row of each row in enc / cache
        prev = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=src.device)
        for step in range(max(limits)):
            force = torch.tensor([step + 1 >= limits[r] for r in active], device=src.device)
            best, nxt = _step_logprobs(model, prev, enc, cache, force).max(dim=-1)
            keep = []
            for j, (r, tok, lp) in enumerate(zip(active, nxt.tolist(), best.tolist(),
                                                 strict=True)):
                logprob[r] += lp
                if tok != EOS_ID:
                    tokens[r].append(tok)
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):
                order = torch.tensor(keep, dtype=torch.long, device=src.device)
                enc = enc.index_select(order)
                cache.reorder(order)
                active = [active[j] for j in keep]
                nxt = nxt[order]
            prev = nxt.unsqueeze(1)
    return [Hypothesis(tokens[r], logprob[r], logprob[r]) for r in range(batch)]


def beam_search(model: Seq2SeqModel[EncT, CacheT], src: torch.Tensor, beam: int = 5,
                lenpen: float = 1.0, max_len: int | None = None, *, max_len_a: float = 1.5,
                max_len_b: int = 10) -> list[Hypothesis]:
    """Batched beam search over src [B, S]; returns the best Hypothesis per row."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    batch, k = src.size(0), beam
    device = src.device
    limits = length_limits(src, max_len, max_len_a, max_len_b).to(device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    with _eval_mode(model):
        enc = model.encode(src).index_select(
            torch.arange(batch, device=device).repeat_interleave(k))
        cache = model.new_cache()
        sent = torch.arange(batch, device=device)  # original sentence of each live block
        scores = torch.full((batch, k), -math.inf, device=device)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        hist = torch.zeros((batch * k, 0), dtype=torch.long, device=device)
        prev = torch.full((batch * k, 1), BOS_ID, dtype=torch.long, device=device)
        beam_offsets = torch.arange(k, device=device)
        for step in range(int(limits.max())):
            b = sent.numel()
            at_limit = step + 1 >= limits[sent]  # [b]
            lp = _step_logprobs(model, prev, enc, cache, at_limit.repeat_interleave(k))
            vocab = lp.size(-1)
            cand = (scores.unsqueeze(2) + lp.view(b, k, vocab)).view(b, k * vocab)
            top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)  # [b, 2k], sorted
            top_beam, top_tok = top_idx // vocab, top_idx % vocab
            is_eos = top_tok.eq(EOS_ID)
            # Final hypotheses: EOS among the best k candidates (fairseq's rule).
            eos_hits = (is_eos[:, :k] & top_scores[:, :k].isfinite()).nonzero().tolist()
            for i, j in eos_hits:
                r = int(sent[i])
                if len(finished[r]) < k:
                    total = float(top_scores[i, j])
                    seq = hist[i * k + int(top_beam[i, j])].tolist()
                    finished[r].append(Hypothesis(seq, total / (step + 1) ** lenpen, total))
            done = torch.tensor([len(finished[int(r)]) >= k for r in sent.tolist()],
                                device=device) | at_limit
            # Live beams: the best k candidates that are not EOS.
            live_scores, live_pos = top_scores.masked_fill(is_eos, -math.inf).topk(k, dim=1)
            live_beam, live_tok = top_beam.gather(1, live_pos), top_tok.gather(1, live_pos)
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            rows = (keep.unsqueeze(1) * k + live_beam[keep]).view(-1)  # rows of the old layout
            cache.reorder(rows)
            if keep.numel() < b:  # a sentence ended: its encoder rows go too
                enc = enc.index_select((keep.unsqueeze(1) * k + beam_offsets).view(-1))
            hist = torch.cat([hist[rows], live_tok[keep].view(-1, 1)], dim=1)
            scores, sent = live_scores[keep], sent[keep]
            prev = live_tok[keep].view(-1, 1)
    return [max(hyps, key=lambda h: h.score) for hyps in finished]


def check_decoding(*, beam: int, lenpen: float, max_tokens: int, max_len: int | None,
                   max_len_a: float, max_len_b: int) -> None:
    """ValueError naming the first decoding option out of range (CLI flag names)."""
    for flag, value, ok, want in (
            ("--beam", beam, beam >= 1, "an integer >= 1"),
            ("--max-tokens", max_tokens, max_tokens >= 1, "an integer >= 1"),
            ("--max-len", max_len, max_len is None or max_len >= 1, "an integer >= 1"),
            ("--max-len-a", max_len_a, max_len_a >= 0, ">= 0"),
            ("--max-len-b", max_len_b, max_len_b >= 0, ">= 0"),
            ("--lenpen", lenpen, lenpen == lenpen, "a number")):
        if not ok:
            raise ValueError(f"{flag} {value}: expected {want}")


def translate_ids(model: Seq2SeqModel[Any, Any],
                  src: Ragged | Sequence[Sequence[int] | np.ndarray], *, beam: int = 5,
                  lenpen: float = 1.0, max_tokens: int = 4096, max_len: int | None = None,
                  max_len_a: float = 1.5, max_len_b: int = 10, device: str | torch.device = "cpu",
                  progress: bool = False) -> list[list[int]]:
    """Translates sentences of ids (no specials) in length-sorted batches; input order kept.

    A batch of B sentences padded to S source tokens satisfies ``B * S * beam <= max_tokens``
    (at least one sentence), so the decoder's rows stay bounded; beam 1 is greedy decoding.
    """

    check_decoding(beam=beam, lenpen=lenpen, max_tokens=max_tokens, max_len=max_len,
                   max_len_a=max_len_a, max_len_b=max_len_b)
    data = src if isinstance(src, Ragged) else Ragged.from_lists(src)
    out: list[list[int]] = [[] for _ in range(len(data))]
    if len(data) == 0:
        return out
    sizes = data.lengths + 1
    limit = max_positions(model)
    if limit is not None:  # every runtime refuses the same inputs, before any work
        too_long = np.flatnonzero(sizes > limit)
        if len(too_long):
            raise InputTooLong(int(too_long[0]), int(sizes[too_long[0]]), limit)
        max_len = limit if max_len is None else min(int(max_len), limit)
    order = np.argsort(sizes, kind="stable")[::-1]  # longest first: memory peaks early
    batches, start = [], 0
    while start < len(order):
        width = int(sizes[order[start]])
        count = max(1, max_tokens // (width * max(1, beam)))
        batches.append(order[start:start + count])
        start += count
    for ids in tqdm(batches, desc="translate", unit="batch", disable=not progress):
        rows = np.sort(ids)
        batch = collate(data, None, rows).src.to(device)
        if beam == 1:
            hyps = greedy_decode(model, batch, max_len, max_len_a=max_len_a, max_len_b=max_len_b)
        else:
            hyps = beam_search(model, batch, beam, lenpen, max_len, max_len_a=max_len_a,
                               max_len_b=max_len_b)
        for i, hyp in zip(rows.tolist(), hyps, strict=True):
            out[i] = hyp.tokens
    return out


def translate_texts(model: Seq2SeqModel[Any, Any], tokenizer: Tokenizer, texts: Sequence[str],
                    *, task: str | None = None, **kwargs: Any) -> list[str]:
    """Detokenised translations of `texts` (normalised like the training data first), into
    target language ``task`` for a multilingual model (its tag starts every source).

    Keyword arguments go to `translate_ids` (beam, lenpen, max_tokens, max_len, ...).
    """

    ids = tokenizer.encode_batch([normalize_text(t) for t in texts])
    if task is not None:
        tag = tokenizer.task_id(task)
        ids = [[tag, *s] for s in ids]
    elif tokenizer.tasks():
        raise ValueError(f"{tokenizer.source}: a multilingual model translates into "
                         f"{', '.join(tokenizer.tasks())}: choose one (--task)")
    return [tokenizer.decode(h) for h in translate_ids(model, ids, **kwargs)]


def evaluate_split(model: Seq2SeqModel[Any, Any], data_dir: str | Path, split: str = "test", *,
                   limit: int | None = None, task: str | None = None,
                   **kwargs: Any) -> dict[str, Any]:
    """BLEU/chrF (sacrebleu, detokenised) and decoding speed of `model` on a prepared split.

    Returns corpus_scores' dict plus ``sentences``, ``decode_s``, ``tokens_per_s`` (generated
    tokens, EOS included, per second of decoding) and the decoding options used;
    `hypotheses` holds the translations in corpus order.
    """
    import time


    tokenizer = Tokenizer.load(data_dir)
    data = load_split(data_dir, split)
    if task is not None:  # one target language of a multilingual split
        data = data.select_task(task)
    refs = data.references()
    if limit is not None and int(limit) < 1:
        raise ValueError(f"--limit {limit}: expected an integer >= 1 (omit it for all)")
    n = len(data) if limit is None else min(int(limit), len(data))
    if n == 0:
        raise ValueError(f"{data_dir}: split {split} has no sentences to evaluate")
    src = [data.src[i] for i in range(n)]
    start = time.perf_counter()
    hyps = translate_ids(model, src, **kwargs)
    seconds = time.perf_counter() - start
    texts = [tokenizer.decode(h) for h in hyps]
    scores = corpus_scores(texts, refs[:n])
    generated = sum(len(h) + 1 for h in hyps)
    options = {k: kwargs[k] for k in ("beam", "lenpen", "max_len_a", "max_len_b", "max_len")
               if k in kwargs}
    return {**scores, "split": split, **({"task": task} if task else {}), "sentences": n,
            "decode_s": round(seconds, 3),
            "tokens_per_s": round(generated / seconds, 1) if seconds > 0 else None,
            "decoding": options, "hypotheses": texts}
