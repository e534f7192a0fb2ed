"""The analytic latency form: latency = Σ_j c_j · φ_j(features), fitted by least absolute
relative error; numpy only.

A decoding run's latency is a sum over layers of per-layer costs plus a per-run part (the
embeddings and the output projection). Where the features are HAT's 10 per-layer averages
(`automoe.costs.latency_tables.HAT_FEATURES`), a stack's sum of per-layer costs that are
linear in a layer's widths is exactly its depth times the cost at the average widths, so the
basis `hat_layer_terms` is each stack's depth times {1, FFN width, heads} (and, in the
decoder, the encoder-decoder heads and the number of encoder layers attended), each also
times the stack's embedding width (whose two values make any function of it linear), plus
the two embedding widths. Any other features (the project's per-layer features and analytic
MACs, a user's columns) are their own basis.

The coefficients minimise the mean absolute percentage error on the training rows (the
metric reported), by iteratively reweighted least squares, with a ridge strength chosen on
the validation rows. Unlike least squares, the fit follows the bulk of the rows and not the
few measured in a slower session: HAT's tables hold blocks of consecutive rows measured
about 20 % (Titan Xp) to 40 % (Raspberry Pi) slower than the rest (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from automoe.costs.latency_tables import HAT_FEATURES

__all__ = ["BASES", "HAT_LAYER_TERMS", "basis_name", "basis_terms", "hat_layer_terms",
           "fit_relative_l1", "RIDGE_GRID"]

_ENC = ("encoder_ffn_embed_dim_avg", "encoder_self_attention_heads_avg")
_DEC = ("decoder_ffn_embed_dim_avg", "decoder_self_attention_heads_avg",
        "decoder_ende_attention_heads_avg", "decoder_arbitrary_ende_attn_avg")


def _hat_term_names() -> tuple[str, ...]:
    names = ["encoder_embed_dim", "decoder_embed_dim"]
    for depth, width, widths in (("encoder_layer_num", "encoder_embed_dim", _ENC),
                                 ("decoder_layer_num", "decoder_embed_dim", _DEC)):
        for w in ("", *widths):
            base = f"{depth}*{w}" if w else depth
            names += [base, f"{base}*{width}"]
    return tuple(names)


HAT_LAYER_TERMS = _hat_term_names()
BASES = ("hat_layers", "identity")
# ridge strengths, relative to the mean diagonal of the weighted normal matrix
RIDGE_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def hat_layer_terms(x: np.ndarray) -> np.ndarray:
    """HAT's 10 features [N, 10] → the per-layer cost terms [N, 18] (`HAT_LAYER_TERMS`:
    a product of features per name, ``*``-joined)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(HAT_FEATURES):
        raise ValueError(f"hat_layer_terms: expected [N, {len(HAT_FEATURES)}], got {x.shape}")
    col = {name: x[:, i] for i, name in enumerate(HAT_FEATURES)}
    return np.column_stack([np.prod([col[f] for f in term.split("*")], axis=0)
                            for term in HAT_LAYER_TERMS])


def basis_name(feature_names: Sequence[str]) -> str:
    """``"hat_layers"`` for HAT's 10 features in HAT's order, else ``"identity"``."""
    return "hat_layers" if tuple(feature_names) == HAT_FEATURES else "identity"


def basis_terms(x: np.ndarray, basis: str) -> np.ndarray:
    """The basis columns φ(x) [N, J] of feature rows x [N, F]."""
    if basis == "hat_layers":
        return hat_layer_terms(x)
    if basis == "identity":
        return np.asarray(x, dtype=np.float64)
    raise ValueError(f"unknown analytic basis {basis!r}; expected one of {list(BASES)}")


def _weighted_solve(a: np.ndarray, w: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_c Σ w_i (a_i·c − 1)² + ridge · mean(diag(AᵀWA)) · |c[:-1]|² (the last column,
    the intercept, unpenalised), by least squares on the weighted rows plus ridge rows."""
    sw = np.sqrt(w)[:, None]
    design, target = a * sw, sw[:, 0]
    if ridge > 0:
        scale = float(np.mean(np.sum(design ** 2, axis=0)))
        penalty = np.sqrt(ridge * scale) * np.eye(a.shape[1])[:-1]
        design = np.vstack([design, penalty])
        target = np.concatenate([target, np.zeros(a.shape[1] - 1)])
    return np.linalg.lstsq(design, target, rcond=None)[0]


def fit_relative_l1(a: np.ndarray, y: np.ndarray, ridge: float = 0.0, *,
                    iters: int = 100, floor: float = 1e-6, tol: float = 1e-10) -> np.ndarray:
    """Coefficients c [J] minimising mean(|a·c − y| / y) (+ the ridge term of
    `_weighted_solve`) for a design a [N, J] whose last column is the intercept (ones) and
    targets y [N] > 0.

    IRLS: each step solves a weighted least-squares problem in the relative residual
    r_i = a_i·c / y_i − 1, weighted 1 / max(|r_i|, floor) (normalised to mean 1), starting
    from relative least squares. A law that the basis holds exactly is recovered exactly:
    its residuals are 0, so all weights are equal and the solve is exact least squares.
    """
    rel = np.asarray(a, dtype=np.float64) / np.asarray(y, dtype=np.float64)[:, None]
    w = np.ones(len(rel))
    coef = _weighted_solve(rel, w, ridge)
    for _ in range(iters):
        r = np.abs(rel @ coef - 1.0)
        w = 1.0 / np.maximum(r, floor)
        w /= w.mean()
        new = _weighted_solve(rel, w, ridge)
        done = np.max(np.abs(new - coef)) <= tol * max(1.0, float(np.max(np.abs(coef))))
        coef = new
        if done:
            break
    return coef
