"""Greedy and beam search against brute force, naive greedy and rigged models.

The fake models implement the protocol of docs/contracts.md (encode / decode(prev, enc,
cache) / new_cache / enc.index_select / cache.reorder); their non-incremental forward is the
independent oracle: it scores whole sequences without the cache or any beam bookkeeping.
"""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from automoe.decoding import beam_search, greedy_decode, length_limits, translate_ids
from supernet.contracts import DecoderState, EncoderState, Seq2SeqModel, SubnetModel
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID


class FakeEnc:
    def __init__(self, src: torch.Tensor):
        self.src = src

    def index_select(self, order: torch.Tensor) -> FakeEnc:
        return FakeEnc(self.src.index_select(0, order))


class FakeCache:
    def __init__(self):
        self.prefix = None  # [B, t] tokens fed so far

    def reorder(self, order: torch.Tensor) -> None:
        self.prefix = self.prefix.index_select(0, order)


class RandomPrefixModel:
    """Next-token logits = a random smooth function of (source tokens, whole prefix)."""

    def __init__(self, vocab: int, seed: int, scale: float = 3.0, positions: int = 64):
        g = torch.Generator().manual_seed(seed)
        h = 16
        self.vocab = vocab
        self.src_emb = torch.randn(vocab, h, generator=g, dtype=torch.float64)
        self.pos_emb = torch.randn(positions, vocab, h, generator=g, dtype=torch.float64)
        self.out = torch.randn(h, vocab, generator=g, dtype=torch.float64) * scale / h**0.5
        self.calls = 0
        self.training = False  # no dropout to switch off, but decoding asks

    @property
    def vocab_size(self) -> int:
        return self.vocab

    def train(self, mode: bool = True) -> RandomPrefixModel:
        self.training = mode
        return self

    def eval(self) -> RandomPrefixModel:
        return self.train(False)

    def encode(self, src):
        return FakeEnc(src)

    def new_cache(self):
        return FakeCache()

    def _logits(self, prefix: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        mask = src.ne(PAD_ID).unsqueeze(-1).double()
        src_vec = (self.src_emb[src] * mask).sum(1) / mask.sum(1)  # padding-independent
        pos = torch.arange(prefix.size(1))
        steps = self.pos_emb[pos.unsqueeze(0), prefix]  # [B, T, h]
        hidden = torch.tanh(src_vec.unsqueeze(1) + steps.cumsum(1))
        return hidden @ self.out  # [B, T, V]

    def decode(self, prev, enc, cache=None):
        self.calls += 1
        if cache is None:
            return self._logits(prev, enc.src), None
        assert prev.size(1) == 1, "incremental decoding feeds one token"
        cache.prefix = prev if cache.prefix is None else torch.cat([cache.prefix, prev], 1)
        return self._logits(cache.prefix, enc.src)[:, -1:], None


class RiggedModel(RandomPrefixModel):
    """For source a...: greedy takes decoy a (p=.55), after which EOS (.12) is the best of a
    flat distribution; the planted sequence a+1, a+2, EOS has p = .45 * .95 * .95."""

    def _dist(self, a: int, seen: tuple[int, ...]) -> torch.Tensor:
        p = torch.zeros(self.vocab, dtype=torch.float64)
        if seen == (a,):
            p[EOS_ID + 1:] = .88 / (self.vocab - EOS_ID - 1)
            p[EOS_ID] = .12
            return p
        table = {(): {a: .55, a + 1: .45}, (a + 1,): {a + 2: .95, UNK_ID: .05},
                 (a + 1, a + 2): {EOS_ID: .95, UNK_ID: .05}}
        for tok, prob in table.get(seen, {EOS_ID: .99, UNK_ID: .01}).items():
            p[tok] = prob
        return p

    def _logits(self, prefix, src):
        b, t = prefix.shape
        return torch.stack([torch.stack([self._dist(int(src[i, 0]),
                                                    tuple(prefix[i, 1:j + 1].tolist())).log()
                                         for j in range(t)]) for i in range(b)])


def pad_batch(rows):
    width = max(len(r) for r in rows) + 1
    return torch.tensor([[*r, EOS_ID] + [PAD_ID] * (width - len(r) - 1) for r in rows])


def seq_logprob(model, src_row: torch.Tensor, seq: list[int]) -> float:
    """Oracle: log-prob of seq (EOS included) from one full forward pass, with the decoder's
    bans (PAD/BOS) and, at the length limit, only EOS allowed (log-prob not renormalised)."""
    prev = torch.tensor([[BOS_ID, *seq[:-1]]])
    logits, _ = model.decode(prev, model.encode(src_row.unsqueeze(0)))
    lp = F.log_softmax(logits[0].float(), dim=-1)
    return float(sum(lp[i, tok] for i, tok in enumerate(seq)))


def brute_force(model, src_row, limit: int, lenpen: float, vocab: int):
    choices = [t for t in range(vocab) if t not in (PAD_ID, BOS_ID, EOS_ID)]
    best = None
    for n in range(limit):
        for body in itertools.product(choices, repeat=n):
            seq = [*body, EOS_ID]
            lp = seq_logprob(model, src_row, seq)
            score = lp / len(seq) ** lenpen
            if best is None or score > best[0]:
                best = (score, list(body), lp)
    return best


def naive_greedy(model, src_row, limit: int) -> list[int]:
    out: list[int] = []
    for step in range(limit):
        prev = torch.tensor([[BOS_ID, *out]])
        logits, _ = model.decode(prev, model.encode(src_row.unsqueeze(0)))
        lp = F.log_softmax(logits[0, -1].float(), dim=-1)
        lp[PAD_ID] = lp[BOS_ID] = -math.inf
        tok = EOS_ID if step + 1 == limit else int(lp.argmax())
        if tok == EOS_ID:
            break
        out.append(tok)
    return out


SOURCES = [[5, 9, 4], [7], [6, 6, 8, 5, 4], [4, 5]]


@pytest.mark.parametrize("lenpen", [0.0, 0.6, 1.0, 2.0])
def test_wide_beam_equals_brute_force(lenpen):
    vocab, limit = 7, 4  # 4 non-EOS choices: 4**3 = 64 beams keep every prefix alive
    model = RandomPrefixModel(vocab, seed=11, scale=2.0)
    src = pad_batch([[4, 6, 5], [6], [5, 5, 4, 6, 4]])
    hyps = beam_search(model, src, beam=64, lenpen=lenpen, max_len=limit)
    for row, hyp in enumerate(hyps):
        score, tokens, lp = brute_force(model, src[row], limit, lenpen, vocab)
        assert hyp.tokens == tokens
        assert hyp.score == pytest.approx(score, abs=1e-5)
        assert hyp.logprob == pytest.approx(lp, abs=1e-5)


def test_decoding_runs_in_eval_mode_and_restores_the_mode():
    model = RandomPrefixModel(12, seed=0)
    assert isinstance(model, Seq2SeqModel)
    seen = []
    decode = model.decode
    model.decode = lambda *a, **kw: (seen.append(model.training), decode(*a, **kw))[1]
    for mode in (True, False):
        model.train(mode)
        greedy_decode(model, pad_batch(SOURCES[:2]), max_len=3)
        beam_search(model, pad_batch(SOURCES[:2]), beam=2, max_len=3)
        assert model.training is mode
    assert seen and not any(seen)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_one_equals_greedy_equals_naive_greedy(seed):
    model = RandomPrefixModel(12, seed=seed)
    src = pad_batch(SOURCES)
    greedy = greedy_decode(model, src, max_len_a=1.0, max_len_b=3)
    beam1 = beam_search(model, src, beam=1, lenpen=1.0, max_len_a=1.0, max_len_b=3)
    limits = length_limits(src, None, 1.0, 3).tolist()
    for row in range(len(SOURCES)):
        assert greedy[row].tokens == beam1[row].tokens == naive_greedy(model, src[row],
                                                                       limits[row])
        assert greedy[row].logprob == pytest.approx(beam1[row].logprob, abs=1e-6)
        n = len(greedy[row].tokens) + 1
        assert beam1[row].score == pytest.approx(beam1[row].logprob / n, abs=1e-6)


def test_beam_finds_the_planted_sequence_greedy_misses():
    model = RiggedModel(20, seed=0)
    src = pad_batch([[5, 9], [10], [14, 4, 4]])
    greedy = greedy_decode(model, src, max_len=6)
    assert [h.tokens[:1] for h in greedy] == [[5], [10], [14]]  # took the decoy
    for lenpen in (0.0, 1.0):
        beam = beam_search(model, src, beam=2, lenpen=lenpen, max_len=6)
        assert [h.tokens for h in beam] == [[6, 7], [11, 12], [15, 16]]
        assert beam[0].logprob == pytest.approx(math.log(.45 * .95 * .95), abs=1e-5)
    assert [h.tokens for h in beam_search(model, src, beam=1, max_len=6)] == [
        h.tokens for h in greedy]


def test_batched_equals_one_by_one_and_limits_hold():
    model = RandomPrefixModel(30, seed=5, scale=1.0)  # flat: sentences run to the limit
    src = pad_batch(SOURCES)
    batched = beam_search(model, src, beam=4, lenpen=0.6, max_len_a=0.5, max_len_b=2)
    limits = length_limits(src, None, 0.5, 2).tolist()
    for row in range(len(SOURCES)):
        alone = beam_search(model, pad_batch([SOURCES[row]]), beam=4, lenpen=0.6,
                            max_len_a=0.5, max_len_b=2)[0]
        assert batched[row].tokens == alone.tokens
        assert len(batched[row].tokens) + 1 <= limits[row]
    assert length_limits(src, 3, 2.0, 10).tolist() == [3, 3, 3, 3]


def test_translate_ids_keeps_input_order():
    model = RandomPrefixModel(12, seed=3)
    sources = [[4 + (i % 7)] * (1 + i % 5) for i in range(23)]
    kw = {"max_len_a": 1.0, "max_len_b": 2}
    got = translate_ids(model, sources, beam=1, max_tokens=24, **kw)
    assert got == [h.tokens for h in greedy_decode(model, pad_batch(sources), **kw)]
    got = translate_ids(model, sources, beam=3, lenpen=0.6, max_tokens=24, **kw)
    assert got == [h.tokens for h in beam_search(model, pad_batch(sources), 3, 0.6, **kw)]


@pytest.mark.parametrize("option, value, flag", [
    ("max_tokens", 0, "--max-tokens 0"), ("beam", 0, "--beam 0"),
    ("max_len_a", -5.0, "--max-len-a -5.0"), ("max_len_b", -1, "--max-len-b -1")])
def test_out_of_range_decoding_options_are_named(option, value, flag):
    model = RandomPrefixModel(12, seed=3)
    with pytest.raises(ValueError, match=flag.replace("-", "\\-").replace(".", "\\.")):
        translate_ids(model, [[4, 5]], **{"beam": 1, option: value})


# ---- the real models: SuperTransformer.bind(subnet), extract(), Transformer(config) ------

@pytest.fixture(scope="module")
def real_models():
    from search_spaces import load_space
    from supernet import SuperTransformer, Transformer

    space = load_space("tiny")
    supernet = SuperTransformer(space, 40, seed=1).eval()
    config = space.sample(random.Random(3))
    return {"bind": supernet.bind(config), "extract": supernet.extract(config).eval(),
            "largest": Transformer(space.largest(), 40, seed=2).eval()}


@pytest.mark.parametrize("name", ["bind", "extract", "largest"])
def test_real_model_beam_one_equals_greedy_and_the_cache_is_exact(real_models, name):
    model = real_models[name]
    rows = [[5, 9, 4, 30, 12], [7], [6, 6, 8, 5, 4, 20, 21, 22], [39, 38]]
    src = pad_batch(rows)
    greedy = greedy_decode(model, src, max_len_a=1.0, max_len_b=4)
    beam1 = beam_search(model, src, beam=1, lenpen=1.0, max_len_a=1.0, max_len_b=4)
    assert [h.tokens for h in greedy] == [h.tokens for h in beam1]
    limits = length_limits(src, None, 1.0, 4).tolist()
    for row, hyp in enumerate(greedy):
        # The incremental cache (one token per step, rows dropped as they finish) must give
        # what recomputing the whole prefix without a cache gives.
        assert hyp.tokens == naive_greedy(model, pad_batch([rows[row]])[0], limits[row])
        assert hyp.logprob == pytest.approx(beam1[row].logprob, abs=1e-5)
    wide = beam_search(model, src, beam=4, lenpen=1.0, max_len_a=1.0, max_len_b=4)
    for row in range(len(rows)):  # a wider beam never scores worse than greedy
        n = len(greedy[row].tokens) + 1
        assert wide[row].score >= greedy[row].logprob / n - 1e-5


def test_bound_view_and_its_extract_satisfy_the_contract_and_decode_alike(real_models):
    """Both implementers of `supernet.contracts` pass the runtime check, and decoding
    through the protocol gives the same tokens for a view and the model extracted from it
    (in train mode too: decoding switches dropout off and restores the mode)."""
    view, static = real_models["bind"], real_models["extract"]
    src = pad_batch([[5, 9, 4, 30, 12], [7], [6, 6, 8, 5, 4, 20, 21, 22], [39, 38]])
    for model in real_models.values():
        assert isinstance(model, SubnetModel) and isinstance(model, Seq2SeqModel)
        assert isinstance(model.encode(src), EncoderState)
        assert isinstance(model.new_cache(), DecoderState)
    want = greedy_decode(static, src, max_len_a=1.0, max_len_b=4)
    assert any(h.tokens for h in want)
    try:
        for mode in (False, True):
            view.train(mode)
            got = greedy_decode(view, src, max_len_a=1.0, max_len_b=4)
            assert view.training is mode and static.training is False
            assert [h.tokens for h in got] == [h.tokens for h in want]
            for g, w in zip(got, want, strict=True):
                assert g.logprob == pytest.approx(w.logprob, abs=1e-5)
        beams = [beam_search(m, src, beam=3, lenpen=0.6, max_len_a=1.0, max_len_b=4)
                 for m in (view, static)]
        assert [h.tokens for h in beams[0]] == [h.tokens for h in beams[1]]
    finally:
        view.eval()


# ---- automoe translate / evaluate ---------------------------------------------------------

# What `normalize_text` rewrites (brackets, typographic quotes, `*`, verse references): test
# references carry them so that scores against the cleaned text differ from official ones.
MESSY = ("[{}]", "\u201e{}\u201c", "{} *", "(3:4) {}", "{} \u00bbja\u00ab [und] *")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A prepared tiny corpus and an exported (random) model with the data's tokenizer; the
    test targets carry marks the clean-up removes (`MESSY`)."""
    import shutil

    from automoe.data import PrepareOptions, make_source, prepare
    from search_spaces import load_space
    from supernet import Transformer

    root = tmp_path_factory.mktemp("exported")
    words = [("cat", "Katze"), ("dog", "Hund"), ("house", "Haus"), ("big", "groß"),
             ("small", "klein"), ("sees", "sieht"), ("the", "die")]
    rng = random.Random(0)
    files = {}
    for split, n in (("train", 120), ("valid", 10), ("test", 12)):
        pairs = [rng.sample(words, rng.randint(2, 5)) for _ in range(n)]
        for side, idx in (("en", 0), ("de", 1)):
            lines = [" ".join(w[idx] for w in p).capitalize() + "." for p in pairs]
            if split == "test" and side == "de":
                lines = [MESSY[i % len(MESSY)].format(s) for i, s in enumerate(lines)]
            path = root / f"{split}.{side}"
            path.write_text("".join(s + "\n" for s in lines), encoding="utf-8")
        files[split] = (root / f"{split}.en", root / f"{split}.de")
    data = root / "data"
    meta = prepare(data, make_source(files=files), PrepareOptions(vocab_size=48),
                   verbose=False).meta
    model_dir = root / "model"
    Transformer(load_space("tiny").largest(), meta["vocab_size"], seed=4).save(
        model_dir)
    shutil.copy(data / "spm.model", model_dir / "spm.model")
    return data, model_dir


def test_translate_cli_files_and_stdin(exported, tmp_path, capsys, monkeypatch):
    import io

    from automoe.cli import main
    from automoe.data import Tokenizer
    from automoe.decoding import translate_texts
    from supernet import Transformer

    data, model_dir = exported
    src = tmp_path / "in.txt"
    src.write_text("The big cat.\n\nSmall dog sees the house.\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["translate", str(model_dir), "--input", str(src), "--output", str(out),
                 "--beam", "2", "--device", "cpu"]) == 0
    lines = out.read_text(encoding="utf-8").split("\n")
    model = Transformer.load(model_dir).eval()
    want = translate_texts(model, Tokenizer.load(data), ["The big cat.", "Small dog sees the house."],
                           beam=2, lenpen=0.6, max_len_a=1.5, max_len_b=10)
    assert lines == [want[0], "", want[1], ""]  # empty input line stays empty
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"The big cat.\n")))
    assert main(["translate", str(model_dir), "--beam", "2", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == want[0] + "\n"


def test_non_finite_scores_stop_decoding_naming_the_model(exported, monkeypatch, capsys,
                                                          tmp_path):
    """Damaged weights (a scale times -1e30, say) give NaN or infinite logits: greedy
    decoding printed garbage with exit 0 and beam search failed on an empty max()."""
    import io

    import torch

    from automoe.cli import main
    from automoe.decoding import NonFiniteScores, beam_search, greedy_decode
    from supernet import Transformer

    _, model_dir = exported
    model = Transformer.load(model_dir).eval()
    decode = Transformer.decode

    def damaged(self, *args, **kwargs):
        logits, aux = decode(self, *args, **kwargs)
        return logits * float("inf"), aux  # +-inf, and NaN where a logit was 0

    monkeypatch.setattr(Transformer, "decode", damaged)
    src = torch.tensor([[5, 6, 7, 2]])
    with pytest.raises(NonFiniteScores, match="not finite"):
        greedy_decode(model, src, max_len=5)
    with pytest.raises(NonFiniteScores, match="not finite"):
        beam_search(model, src, beam=2, max_len=5)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"The big cat.\n")))
    assert main(["translate", str(model_dir), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert f"{model_dir}: the model's scores at decoding step 1 are not finite" in captured.err
    assert captured.out == ""


def test_a_line_longer_than_the_models_positions_is_named(exported, monkeypatch, capsys):
    import io

    from automoe.cli import main
    from supernet import Transformer

    _, model_dir = exported
    limit = Transformer.load(model_dir).options.max_positions
    text = "fine\n" + " ".join(["cat"] * (limit + 10)) + "\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert main(["translate", str(model_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "<stdin> line 2: " in err and f"more than the model's max_positions ({limit})" in err


def test_invalid_utf8_on_stdin_is_named_like_a_files(exported, monkeypatch, capsys):
    import io

    from automoe.cli import main

    _, model_dir = exported
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"fine\nab\xffc\n")))
    assert main(["translate", str(model_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "<stdin> line 2: not valid UTF-8 (byte 0xff at column 3)" in err
    assert len(err.strip().splitlines()) == 1


def test_evaluate_cli_scores_with_sacrebleu_on_the_raw_references(exported, tmp_path, capsys):
    import sacrebleu

    from automoe.cli import main
    from automoe.data import load_split

    data, model_dir = exported
    hyps, report = tmp_path / "hyps.txt", tmp_path / "scores.json"
    assert main(["evaluate", str(model_dir), "--data", str(data), "--beam", "1", "--device",
                 "cpu", "--hyps", str(hyps), "--json", str(report)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(report.read_text(encoding="utf-8"))
    texts = hyps.read_text(encoding="utf-8").split("\n")[:-1]
    refs = (model_dir.parent / "test.de").read_text(encoding="utf-8").split("\n")[:-1]
    assert any(c in "".join(refs) for c in "[]*\u201e\u00bb")
    assert printed["bleu"] == sacrebleu.corpus_bleu(texts, [refs]).score
    assert printed["chrf"] == sacrebleu.corpus_chrf(texts, [refs]).score
    cleaned = load_split(data, "test").texts("tgt")  # what the model reads, not the reference
    assert cleaned != refs and sacrebleu.corpus_chrf(texts, [cleaned]).score != printed["chrf"]
    assert printed["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert printed["sentences"] == len(refs) == 12 and printed["tokens_per_s"] > 0
    assert printed["decoding"]["beam"] == 1


def test_translate_cli_errors(exported, tmp_path, capsys):
    import shutil

    from automoe.cli import main

    data, model_dir = exported
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "spm.model").unlink()
    assert main(["translate", str(bare), "--device", "cpu"]) == 2
    assert "has no spm.model; pass --data DIR" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--data", str(data), "--device", "cpu"]) == 2
    assert "config.json does not exist" in capsys.readouterr().err
    assert main(["evaluate", str(model_dir), "--data", str(data), "--split", "dev"]) == 2
    assert "no split 'dev'" in capsys.readouterr().err
