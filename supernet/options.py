"""`ModelOptions`: the settings of a model that are not its architecture (regularisation,
layer-norm placement, positions, routing noise). Shared by the supernet and the static model,
stored in an exported model's ``config.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from search_spaces.checks import check_known_fields

__all__ = ["ModelOptions", "DEFAULT_OPTIONS", "scaled_rate"]


@dataclass(frozen=True)
class ModelOptions:
    """Non-architectural model settings.

    Attributes:
        dropout: residual/embedding dropout at the reference width (see below).
        attention_dropout: dropout on attention probabilities (not width-scaled, as HAT).
        activation_dropout: dropout after the FFN activation (width-scaled, as HAT).
        normalize_before: pre-LN layers (with a final layer norm per stack) instead of the
            post-LN Transformer of HAT/fairseq.
        max_positions: longest source or target sequence accepted.
        router_jitter: multiplicative uniform noise ``x * U(1-eps, 1+eps)`` on the router's
            input, training mode only (0 turns it off).
        normalize_gates: renormalise the top-k gate weights to sum to 1 (fairseq top-2);
            off by default, as AutoMoE (output = sum of p_k * expert_k(x)).
        dropout_reference_dims: (encoder, decoder) widths at which ``dropout`` and
            ``activation_dropout`` hold; a stack of width d uses ``rate * d / ref`` (HAT's
            ``calc_dropout``). None means the model's own widths (no scaling). A supernet
            fills in its maximal widths; `extract` passes them on so the static model drops
            out exactly like the supernet did.
        positions_dim: width of the one sinusoid table that every stack takes its first d
            columns from (HAT: the supernet's largest width), so the embedding columns that
            all widths share see the same position signal at every width. None (the default,
            and what an options dict without the key means) gives each width its own
            d-wide sinusoid. Must be >= the model's embedding width; `extract` passes it on.
    """

    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    normalize_before: bool = False
    max_positions: int = 1024
    router_jitter: float = 0.01
    normalize_gates: bool = False
    dropout_reference_dims: tuple[int, int] | None = None
    positions_dim: int | None = None

    def __post_init__(self) -> None:
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"ModelOptions: '{name}' must be in [0, 1), got {value!r}")
        if not isinstance(self.router_jitter, (int, float)) or not 0.0 <= self.router_jitter < 1.0:
            raise ValueError(f"ModelOptions: 'router_jitter' must be in [0, 1), got "
                             f"{self.router_jitter!r}")
        if isinstance(self.max_positions, bool) or not isinstance(self.max_positions, int) \
                or self.max_positions < 1:
            raise ValueError(f"ModelOptions: 'max_positions' must be an integer >= 1, got "
                             f"{self.max_positions!r}")
        ref = self.dropout_reference_dims
        if ref is not None:
            if (not isinstance(ref, (tuple, list)) or len(ref) != 2
                    or not all(isinstance(v, int) and v > 0 for v in ref)):
                raise ValueError("ModelOptions: 'dropout_reference_dims' must be two positive "
                                 f"integers (encoder, decoder) or None, got {ref!r}")
            object.__setattr__(self, "dropout_reference_dims", tuple(ref))
        pos = self.positions_dim
        if pos is not None and (isinstance(pos, bool) or not isinstance(pos, int) or pos < 2):
            raise ValueError(f"ModelOptions: 'positions_dim' must be an integer >= 2 or None, "
                             f"got {pos!r}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.dropout_reference_dims is not None:
            out["dropout_reference_dims"] = list(self.dropout_reference_dims)
        if self.positions_dim is None:  # absent = per-width sinusoids: older files stay equal
            del out["positions_dim"]
        return out

    def check_positions(self, width: int, *, source: str) -> None:
        """Raises ValueError unless the position table covers embedding width `width`."""
        if self.positions_dim is not None and self.positions_dim < width:
            raise ValueError(f"{source}: positions_dim {self.positions_dim} is narrower than "
                             f"the embedding width {width}")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> ModelOptions:
        """Inverse of `to_dict`; raises ValueError naming `source` and the bad key."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: model options must be a JSON object, got "
                             f"{type(data).__name__}")
        check_known_fields(cls, data, source=source, what="model option(s)")
        kwargs = dict(data)
        if isinstance(kwargs.get("dropout_reference_dims"), list):
            kwargs["dropout_reference_dims"] = tuple(kwargs["dropout_reference_dims"])
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from None

    def with_reference_dims(self, encoder: int, decoder: int) -> ModelOptions:
        """These options with the reference widths filled in (kept if already set)."""
        if self.dropout_reference_dims is not None:
            return self
        return dataclasses.replace(self, dropout_reference_dims=(encoder, decoder))


DEFAULT_OPTIONS = ModelOptions()


def scaled_rate(rate: float, width: int, reference: int) -> float:
    """HAT's width-scaled dropout: ``rate * width / reference`` (capped below 1)."""
    return min(rate * width / reference, 0.99)
