"""Small stand-ins for the training tests: a search space, a sliced "supernet" with
per-layer experts (so that whole parameters go unused for some subnets, as in the real
one), and a resumable list batcher. They keep the loop's own tests independent of the
model code; the end-to-end tests use the real SuperTransformer and TokenBatcher."""

from __future__ import annotations

import random
from types import SimpleNamespace

import torch
from torch import nn

from search_spaces.config import SubnetConfig
from supernet.tokens import BOS_ID, EOS_ID, PAD_ID

VOCAB = 24
WIDTHS = (8, 16)
LAYERS = (1, 2)
EXPERTS = (1, 2)


def make_config(width: int, layers: int, experts: int, hidden: int) -> SubnetConfig:
    dims = tuple((hidden,) * experts for _ in range(layers))
    ones = (1,) * layers
    return SubnetConfig(encoder_embed_dim=width, decoder_embed_dim=width, qkv_dim=16,
                        encoder_expert_dims=dims, encoder_heads=ones, encoder_top_k=ones,
                        decoder_expert_dims=dims, decoder_heads=ones, decoder_cross_heads=ones,
                        decoder_ende_attn=ones, decoder_top_k=ones)


class FakeSpace:
    def sample(self, rng: random.Random) -> SubnetConfig:
        return make_config(rng.choice(WIDTHS), rng.choice(LAYERS), rng.choice(EXPERTS),
                           rng.choice(WIDTHS))

    def largest(self) -> SubnetConfig:
        return make_config(max(WIDTHS), max(LAYERS), max(EXPERTS), max(WIDTHS))

    def smallest(self) -> SubnetConfig:
        return make_config(min(WIDTHS), min(LAYERS), min(EXPERTS), min(WIDTHS))


class FakeSupernet(nn.Module):
    """Bag-of-source context + per-position decoder MLP with top-1 sliced experts."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        d, h = max(WIDTHS), max(WIDTHS)
        self.emb = nn.Embedding(VOCAB, d, padding_idx=PAD_ID)
        self.ctx = nn.Linear(d, d)
        self.router = nn.ModuleList(nn.Linear(d, max(EXPERTS)) for _ in range(max(LAYERS)))
        self.fc1 = nn.ModuleList(nn.ModuleList(nn.Linear(d, h) for _ in range(max(EXPERTS)))
                                 for _ in range(max(LAYERS)))
        self.fc2 = nn.ModuleList(nn.ModuleList(nn.Linear(h, d) for _ in range(max(EXPERTS)))
                                 for _ in range(max(LAYERS)))
        self.drop = nn.Dropout(dropout)

    def forward(self, src, prev, subnet: SubnetConfig):
        d = subnet.decoder_embed_dim
        w = self.emb.weight[:, :d]
        mask = src.ne(PAD_ID).unsqueeze(-1).float()
        ctx = (w[src] * mask).sum(1) / mask.sum(1)  # [B, d]
        x = w[prev] + nn.functional.linear(ctx, self.ctx.weight[:d, :d], self.ctx.bias[:d])[:, None]
        balance = x.new_zeros(())
        for i, dims in enumerate(subnet.decoder_expert_dims):
            n = len(dims)
            probs = nn.functional.linear(x, self.router[i].weight[:n, :d],
                                         self.router[i].bias[:n]).softmax(-1)
            top = probs.argmax(-1)  # [B, T]
            out = torch.zeros_like(x)
            for e, hid in enumerate(dims):
                sel = top.eq(e)
                if not sel.any():
                    continue  # an expert with no tokens gets no gradient at all
                a, b = self.fc1[i][e], self.fc2[i][e]
                y = torch.relu(nn.functional.linear(x[sel], a.weight[:hid, :d], a.bias[:hid]))
                y = nn.functional.linear(self.drop(y), b.weight[:d, :hid], b.bias[:d])
                out[sel] = y * probs[sel][:, e:e + 1]
            frac = torch.bincount(top.flatten(), minlength=n).float() / top.numel()
            balance = balance + n * (frac * probs.mean((0, 1))).sum()
            x = x + out
        logits = x @ w.t()
        return logits, SimpleNamespace(load_balance=balance, z_loss=x.new_zeros(()))


class FakePlain(nn.Module):
    """A fixed-architecture model called as model(src, prev)."""

    def __init__(self, config: SubnetConfig) -> None:
        super().__init__()
        self.config = config
        self.inner = FakeSupernet()

    def forward(self, src, prev):
        return self.inner(src, prev, self.config)


def synthetic_pairs(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Copy-and-shift task: target token = source token + 1 (learnable from the bag)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        src = [rng.randrange(EOS_ID + 1, VOCAB - 1) for _ in range(rng.randint(2, 6))]
        out.append((src, [t + 1 for t in src]))
    return out


def collate(pairs):
    s_len = max(len(s) for s, _ in pairs) + 1
    t_len = max(len(t) for _, t in pairs) + 1
    src = torch.full((len(pairs), s_len), PAD_ID)
    prev = torch.full((len(pairs), t_len), PAD_ID)
    target = torch.full((len(pairs), t_len), PAD_ID)
    for i, (s, t) in enumerate(pairs):
        src[i, :len(s) + 1] = torch.tensor(s + [EOS_ID])
        prev[i, :len(t) + 1] = torch.tensor([BOS_ID] + t)
        target[i, :len(t) + 1] = torch.tensor(t + [EOS_ID])
    return src, prev, target


class ListBatcher:
    """Fixed batches; data-parallel rank r of w takes batches r, r + w, ...; resumable."""

    def __init__(self, batches, rank: int = 0, world_size: int = 1) -> None:
        self.batches = batches[rank::world_size]
        self.epoch = self.position = 0

    def __iter__(self):
        while self.position < len(self.batches):
            self.position += 1
            yield self.batches[self.position - 1]
        self.epoch += 1
        self.position = 0

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.epoch, self.position = state["epoch"], state["position"]


def make_batches(n_batches: int, per_batch: int, seed: int):
    pairs = synthetic_pairs(n_batches * per_batch, seed)
    return [collate(pairs[i * per_batch:(i + 1) * per_batch]) for i in range(n_batches)]


