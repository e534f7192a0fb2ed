"""Which subnets an update trains, and which fixed subnets validation probes.

Every random choice here comes from a ``random.Random`` seeded by `derive_seed` (a SHA-256
of the parts, never Python's salted ``hash``), so every data-parallel rank and every
gradient-accumulation step of an update draws the same subnet, and a run replays exactly.

Rules (`SamplingRule.kind`):

- ``uniform``: one subnet drawn with ``space.sample`` per update (HAT / AutoMoE);
- ``sandwich``: the largest and the smallest subnet plus ``num_random`` random ones per
  update, their gradients accumulated (BigNAS / OFA); the update costs ``2 + num_random``
  forward/backward passes over the same batches.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Protocol

from search_spaces.config import SubnetConfig

__all__ = [
    "SAMPLING_KINDS",
    "SamplingRule",
    "Space",
    "derive_seed",
    "subnets_for_update",
    "probe_subnets",
]

SAMPLING_KINDS = ("uniform", "sandwich")


class Space(Protocol):
    """The part of `search_spaces.SearchSpace` that training uses."""

    def sample(self, rng: random.Random) -> SubnetConfig: ...
    def largest(self) -> SubnetConfig: ...
    def smallest(self) -> SubnetConfig: ...


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit integer from `parts` (ints/strings): the same in every process and
    Python version, unlike ``hash(tuple)`` (salted per process for strings)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class SamplingRule:
    """How subnets are drawn per update.

    Attributes:
        kind: "uniform" (one random subnet) or "sandwich" (largest + smallest + random).
        num_random: random subnets per update under the sandwich rule.
        only: uniform sampling restricted to "dense" or "moe" subnets (a few-shot
            sub-supernet, Zhao et al. 2021); None: the whole space.
    """

    kind: str = "uniform"
    num_random: int = 2
    only: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SAMPLING_KINDS:
            raise ValueError(f"sampling kind {self.kind!r} is not one of {SAMPLING_KINDS}")
        if self.num_random < 0:
            raise ValueError(f"sampling num_random must be >= 0, got {self.num_random}")
        if self.only not in (None, "dense", "moe"):
            raise ValueError(f"sampling only must be 'dense', 'moe' or None, got {self.only!r}")
        if self.only is not None and self.kind != "uniform":
            raise ValueError("sampling only (a few-shot sub-supernet) needs uniform sampling")

    @property
    def subnets_per_update(self) -> int:
        return 1 if self.kind == "uniform" else 2 + self.num_random

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "num_random": self.num_random}
        if self.only is not None:  # (absent in runs from before the option)
            out["only"] = self.only
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingRule:
        return cls(kind=str(data["kind"]), num_random=int(data["num_random"]),
                   only=data.get("only"))


def subnets_for_update(space: Space, rule: SamplingRule, *, seed: int,
                       update: int) -> tuple[SubnetConfig, ...]:
    """The subnets trained at `update` (1-based), a pure function of (space, rule, seed,
    update)."""
    rng = random.Random(derive_seed("subnet", seed, update))
    if rule.kind == "uniform" and rule.only is not None:
        return (_sample_kind(space, rng, rule.only),)
    if rule.kind == "uniform":
        return (space.sample(rng),)
    return (space.largest(), space.smallest(), *(space.sample(rng) for _ in range(rule.num_random)))


def _sample_kind(space: Space, rng: random.Random, only: str, tries: int = 1000
                 ) -> SubnetConfig:
    """A random dense subnet (``space.sample_dense``) or a random MoE subnet (uniform draws
    until one has experts in some layer)."""
    if only == "dense":
        return space.sample_dense(rng)  # type: ignore[attr-defined]
    for _ in range(tries):
        config = space.sample(rng)
        if not config.is_dense:
            return config
    raise ValueError(f"no MoE subnet in {tries} draws: the space has no experts to train")


def probe_subnets(space: Space, *, seed: int, num_random: int = 2,
                  max_tries: int = 1000) -> dict[str, SubnetConfig]:
    """The fixed subnets validation tracks, by name (distinct architectures only).

    ``smallest``, ``largest``, ``random-i`` (fixed draws), ``dense-NAME`` for each of the
    space's `dense_baselines()` (when it has them), and one fixed random dense (``random-dense``)
    and one fixed random MoE subnet (``random-moe``) when the space can produce them within
    `max_tries` draws. A name is dropped if an earlier probe has the same architecture.
    """
    rng = random.Random(derive_seed("probe", seed))
    named: list[tuple[str, SubnetConfig]] = [("smallest", space.smallest()),
                                             ("largest", space.largest())]
    named += [(f"random-{i}", space.sample(rng)) for i in range(num_random)]
    baselines = getattr(space, "dense_baselines", None)
    if baselines is not None:
        named += [(f"dense-{name}", cfg) for name, cfg in baselines().items()]
    for name, want_dense in (("random-dense", True), ("random-moe", False)):
        for _ in range(max_tries):
            cfg = space.sample(rng)
            if cfg.is_dense == want_dense:
                named.append((name, cfg))
                break
    probes: dict[str, SubnetConfig] = {}
    seen: set[SubnetConfig] = set()
    for name, cfg in named:
        if cfg not in seen:
            seen.add(cfg)
            probes[name] = cfg
    return probes
