"""The ``--pick`` rules that name one candidate of a search run: the default and the help
text, importable without pandas or torch (the CLI shows them in ``automoe export --help``).
The rules are applied by `automoe.export.select_key`; its module docstring defines them."""

from __future__ import annotations

__all__ = ["DEFAULT_PICK", "PICK_HELP"]

DEFAULT_PICK = "best-bleu"
PICK_HELP = ("best-bleu (default), best-loss, knee, METRIC<=X or METRIC>=X (latency<=80ms, "
             "flops<=1.5G, params<=10M), or a candidate key / unique prefix (>= 4 hex digits)")
