"""Data-side benchmarks (numbers go to docs/benchmarks.md and docs/data.md).

    python scripts/bench_data.py batching [--pairs 1000000]   # batcher throughput + memory
    python scripts/bench_data.py beam [--batch 32]            # beam-search tokens/s
    python scripts/bench_data.py corpus --data DIR [...]      # BLEU after N updates

* batching: a synthetic corpus (lengths drawn like Bible verses, 1M pairs by default) is
  written with `RaggedWriter`, opened memory-mapped and batched with `TokenBatcher`; reports
  planning time per epoch, batches/s and sentences/s of full iteration (padding included),
  padding efficiency and the process's peak RSS / Python heap.
* beam: greedy and beam-5 decoding of random 30-token sources with a demo-sized model:
  supernet's exported `Transformer` when it exists, else this file's plain model (full-prefix
  recompute per step, so slower than a KV cache); tokens/s counts generated tokens (EOS
  included). Random weights rarely emit EOS, so every sentence runs to the length limit.
* corpus: trains this file's plain Transformer (d=256, 3+3 layers, ffn 1024, 4 heads) on a
  prepared data dir for a fixed number of updates (~2,000-token batches; wall time is
  reported, not used: other processes on a shared machine would change the result), logs
  dev loss and greedy BLEU on a test subset at checkpoints, then greedy BLEU (and beam
  search with --final-beam) on the full test split. Used to choose the demo's corpus.

Every number states its device and thread count; timings are ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from automoe.bleu import corpus_scores  # noqa: E402
from automoe.data import TokenBatcher, Tokenizer, load_split, read_meta  # noqa: E402
from automoe.data.store import Ragged, RaggedWriter  # noqa: E402
from automoe.decoding import beam_search, greedy_decode, translate_ids  # noqa: E402
from automoe.io_utils import atomic_write_json  # noqa: E402
from supernet.tokens import PAD_ID  # noqa: E402


def device_line() -> str:
    return (f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- batching ---------------------------------------------------------------------------------

def bench_batching(pairs: int, max_tokens: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        for side in ("src", "tgt"):
            writer = RaggedWriter(root, "train", side)
            for start in range(0, pairs, 100_000):
                n = min(100_000, pairs - start)
                lengths = np.clip(rng.lognormal(3.3, 0.45, size=n).astype(int), 1, 126)
                flat = rng.integers(4, 8000, size=int(lengths.sum()), dtype=np.int32)
                splits = np.split(flat, np.cumsum(lengths)[:-1])
                writer.append(splits)
            writer.close()
        write_s = time.perf_counter() - t0
        rss_before = peak_rss_mb()
        tracemalloc.start()
        src, tgt = Ragged.load(root, "train", "src"), Ragged.load(root, "train", "tgt")
        batcher = TokenBatcher(src, tgt, max_tokens=max_tokens, seed=seed)
        t0 = time.perf_counter()
        plan = batcher.epoch_batches(0)
        plan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_batches = n_sent = real = padded = 0
        for batch in batcher:
            n_batches += 1
            n_sent += batch.src.size(0)
            real += int(batch.src.ne(PAD_ID).sum()) + batch.num_tokens
            padded += batch.src.numel() + batch.target.numel()
        iter_s = time.perf_counter() - t0
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert n_sent == pairs and n_batches == len(plan)
        tokens = int(src.lengths.sum() + tgt.lengths.sum())
    return {"bench": "batching", "device": device_line(), "pairs": pairs,
            "tokens_without_specials": tokens, "max_tokens": max_tokens,
            "write_s": round(write_s, 2), "plan_epoch_s": round(plan_s, 3),
            "iterate_epoch_s": round(iter_s, 2), "batches": n_batches,
            "batches_per_s": round(n_batches / iter_s, 1),
            "sentences_per_s": round(n_sent / iter_s),
            "padding_efficiency": round(real / padded, 4),
            "python_heap_peak_mb": round(heap_peak / 2**20, 1),
            "peak_rss_mb_before_batching": round(rss_before, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


# ---- a plain Transformer on the decoding protocol ---------------------------------------------

class PlainEnc(NamedTuple):
    out: torch.Tensor  # [B, S, d]
    pad: torch.Tensor  # [B, S] True at padding

    def index_select(self, order: torch.Tensor) -> PlainEnc:
        return PlainEnc(self.out.index_select(0, order), self.pad.index_select(0, order))


class PrefixCache:
    """Keeps the fed prefix and recomputes the decoder over it (no K/V cache)."""

    def __init__(self) -> None:
        self.prefix: torch.Tensor | None = None

    def reorder(self, order: torch.Tensor) -> None:
        if self.prefix is not None:
            self.prefix = self.prefix.index_select(0, order)


class PlainTransformer(nn.Module):
    """Pre-norm nn.Transformer with tied embeddings, learned positions, the protocol API."""

    def __init__(self, vocab: int, *, d: int = 256, layers: int = 3, heads: int = 4,
                 ffn: int = 1024, dropout: float = 0.1, max_positions: int = 256) -> None:
        super().__init__()
        self.d, self.vocab_size = d, vocab
        self.emb = nn.Embedding(vocab, d, padding_idx=PAD_ID)
        nn.init.normal_(self.emb.weight, std=d**-0.5)
        self.pos = nn.Embedding(max_positions, d)
        self.core = nn.Transformer(d, heads, layers, layers, ffn, dropout, batch_first=True,
                                   norm_first=True)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.size(1), device=tokens.device)
        return self.emb(tokens) * self.d**0.5 + self.pos(pos)

    def encode(self, src: torch.Tensor) -> PlainEnc:
        pad = src.eq(PAD_ID)
        return PlainEnc(self.core.encoder(self._embed(src), src_key_padding_mask=pad), pad)

    def new_cache(self) -> PrefixCache:
        return PrefixCache()

    def decode(self, prev: torch.Tensor, enc: PlainEnc, cache: PrefixCache | None = None):
        if cache is not None:
            cache.prefix = prev if cache.prefix is None else torch.cat([cache.prefix, prev], 1)
            prev = cache.prefix
        t = prev.size(1)
        causal = torch.triu(torch.full((t, t), float("-inf"), device=prev.device), 1)
        h = self.core.decoder(self._embed(prev), enc.out, tgt_mask=causal, tgt_is_causal=True,
                              memory_key_padding_mask=enc.pad)
        logits = h @ self.emb.weight.t()
        return (logits[:, -1:] if cache is not None else logits), None

    def forward(self, src, prev):
        return self.decode(prev, self.encode(src))


def demo_model(vocab: int):
    """supernet's exported Transformer at demo size when available, else PlainTransformer."""
    try:
        from search_spaces import load_space
        from supernet import Transformer  # noqa: F401 - presence check
        config = load_space("demo").largest()
        name = (f"supernet.Transformer demo largest ({config.key()}): d={config.encoder_embed_dim}, "
                f"{config.encoder_layers}+{config.decoder_layers} layers, experts "
                f"{config.encoder_experts}/{config.decoder_experts}")
        return Transformer(config, vocab), name
    except Exception as err:  # noqa: BLE001 - any missing piece: fall back to the plain model
        print(f"supernet.Transformer unavailable ({err}); using PlainTransformer", file=sys.stderr)
        return PlainTransformer(vocab, dropout=0.0), "PlainTransformer d=256 3+3 (prefix recompute)"


def bench_beam(batch: int, src_len: int, steps: int, vocab: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model, name = demo_model(vocab)
    model.eval()
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, vocab, (batch, src_len), generator=g)
    src[:, -1] = 3
    out = {"bench": "beam", "device": device_line(), "model": name, "batch": batch,
           "src_len": src_len, "max_len": steps}
    for label, fn in (("greedy", lambda: greedy_decode(model, src, max_len=steps)),
                      ("beam5", lambda: beam_search(model, src, 5, 1.0, max_len=steps))):
        fn()  # warm-up
        times, tokens = [], 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            hyps = fn()
            times.append(time.perf_counter() - t0)
            tokens = sum(len(h.tokens) + 1 for h in hyps)
        med = float(np.median(times))
        out[label] = {"median_s": round(med, 3), "tokens": tokens,
                      "tokens_per_s": round(tokens / med, 1)}
    return out


# ---- corpus trial -----------------------------------------------------------------------------

def evaluate_bleu(model, data_dir: Path, split: str, limit: int | None, beam: int) -> dict:
    tok = Tokenizer.load(data_dir)
    data = load_split(data_dir, split)
    n = len(data) if limit is None else min(limit, len(data))
    src = Ragged.from_lists([data.src[i] for i in range(n)])
    t0 = time.perf_counter()
    hyps = translate_ids(model, src, beam=beam, lenpen=0.6, max_tokens=6000,
                         max_len_a=1.2, max_len_b=10)
    secs = time.perf_counter() - t0
    scores = corpus_scores([tok.decode(h) for h in hyps], data.references()[:n])
    return {"bleu": round(scores["bleu"], 2), "chrf": round(scores["chrf"], 2),
            "sentences": n, "beam": beam, "decode_s": round(secs, 1),
            "signature": scores["signatures"]["bleu"]}


def dev_loss(model, data_dir: Path) -> float:
    data = load_split(data_dir, "valid")
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for batch in TokenBatcher(data.src, data.tgt, max_tokens=4000, shuffle=False):
            logits, _ = model(batch.src, batch.prev)
            total += float(F.cross_entropy(logits.flatten(0, 1), batch.target.flatten(),
                                           ignore_index=PAD_ID, reduction="sum"))
            count += batch.num_tokens
    model.train()
    return total / count


def bench_corpus(data_dir: Path, updates: int, checkpoints: int, max_tokens: int,
                 seed: int, eval_subset: int, final_beam: int, warmup_steps: int) -> dict:
    """Trains for a fixed number of updates (so CPU contention from other processes changes
    the wall time, not the result) and logs quality at evenly spaced checkpoints."""
    torch.manual_seed(seed)
    meta = read_meta(data_dir)
    model = PlainTransformer(meta["vocab_size"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9)
    warmup = warmup_steps  # a few minutes of CPU are only a few hundred updates
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, math.sqrt(warmup / (s + 1))))
    train = load_split(data_dir, "train")
    batcher = TokenBatcher(train.src, train.tgt, max_tokens=max_tokens, seed=seed)
    marks = [round(updates * (i + 1) / checkpoints) for i in range(checkpoints)]
    log, trained, steps, tgt_tokens = [], 0.0, 0, 0
    model.train()
    while steps < updates:
        for batch in batcher:
            t0 = time.perf_counter()
            logits, _ = model(batch.src, batch.prev)
            loss = F.cross_entropy(logits.flatten(0, 1), batch.target.flatten(),
                                   ignore_index=PAD_ID, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            trained += time.perf_counter() - t0
            steps += 1
            tgt_tokens += batch.num_tokens
            if steps in marks:
                entry = {"updates": steps, "train_min": round(trained / 60, 2),
                         "epochs": round(batcher.epoch + batcher.position / len(batcher), 2),
                         "tgt_tokens": tgt_tokens,
                         "tgt_tokens_per_s": round(tgt_tokens / trained),
                         "dev_nll": round(dev_loss(model, data_dir), 3),
                         "test_subset": evaluate_bleu(model, data_dir, "test", eval_subset, 1)}
                model.train()
                log.append(entry)
                print(json.dumps(entry), file=sys.stderr, flush=True)
            if steps >= updates:
                break
    final = {"greedy": evaluate_bleu(model, data_dir, "test", None, 1)}
    if final_beam > 1:
        final[f"beam{final_beam}"] = evaluate_bleu(model, data_dir, "test", None, final_beam)
    return {"bench": "corpus", "device": device_line(), "data": str(data_dir),
            "corpus": meta["name"], "pairs": {s: v["pairs"] for s, v in meta["splits"].items()},
            "model": "PlainTransformer d=256 3+3 ffn1024 h4 dropout0.1 tied",
            "max_tokens": max_tokens, "updates": updates, "warmup": warmup_steps,
            "lr": 1e-3, "log": log, "final": final}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", metavar="FILE", help="also write the result here")
    sub = p.add_subparsers(dest="bench", required=True)
    b = sub.add_parser("batching")
    b.add_argument("--pairs", type=int, default=1_000_000)
    b.add_argument("--max-tokens", type=int, default=4096)
    b.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("beam")
    m.add_argument("--batch", type=int, default=32)
    m.add_argument("--src-len", type=int, default=30)
    m.add_argument("--max-len", type=int, default=30)
    m.add_argument("--vocab", type=int, default=8000)
    m.add_argument("--repeats", type=int, default=3)
    c = sub.add_parser("corpus")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--updates", type=int, default=480, help="about 8 min of 2 quiet cores")
    c.add_argument("--checkpoints", type=int, default=4)
    c.add_argument("--max-tokens", type=int, default=2000)
    c.add_argument("--eval-subset", type=int, default=300)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--final-beam", type=int, default=0, help="also beam-search the test set")
    c.add_argument("--warmup", type=int, default=100, help="warmup updates (inverse sqrt after)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.bench == "batching":
        result = bench_batching(args.pairs, args.max_tokens, args.seed)
    elif args.bench == "beam":
        result = bench_beam(args.batch, args.src_len, args.max_len, args.vocab, args.repeats)
    else:
        result = bench_corpus(args.data, args.updates, args.checkpoints, args.max_tokens,
                              args.seed, args.eval_subset, args.final_beam, args.warmup)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
