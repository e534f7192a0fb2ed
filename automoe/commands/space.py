"""`automoe space show NAME|PATH [--json]` and `automoe space list`: inspect search spaces."""

from __future__ import annotations

import argparse
import json
from typing import Any

from search_spaces import available_spaces, load_space
from search_spaces.space import CHOICE_KEYS, OPTIONAL_CHOICE_KEYS

__all__ = ["register", "format_space"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "space", help="inspect search spaces (choices, size, largest/smallest subnet)",
        description="Inspect a search space: a shipped one by name (see 'automoe space list') or "
                    "any YAML file by path (format: docs/search_space.md).")
    sub = p.add_subparsers(dest="space_command", metavar="ACTION", required=True)
    show = sub.add_parser(
        "show", help="print a space's choices, exact size, largest and smallest subnet",
        description="Load and validate a space, then print every dimension's choices, the "
                    "supernet's sizes, the exact number of distinct subnets and the largest and "
                    "smallest subnet. --json prints one JSON object (keys include name, size, "
                    "largest, smallest, choices, supernet).")
    show.add_argument("space", metavar="NAME|PATH", help="shipped space name or a YAML path")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=_show)
    lst = sub.add_parser("list", help="list the shipped spaces",
                         description="List the spaces shipped in search_spaces/ (load them by name "
                                     "anywhere a space is asked for) with their sizes (log10 of "
                                     "the number of distinct subnets) and descriptions.")
    lst.set_defaults(func=_list)


def format_space(info: dict[str, Any]) -> str:
    """Human-readable text of `SearchSpace.describe()`."""
    lines = [f"space {info['name']}  ({info['source']})"]
    if info["description"]:
        lines.append(f"  {info['description']}")
    lines.append(f"  heterogeneous experts: {'yes' if info['heterogeneous_experts'] else 'no'}")
    width = max(map(len, CHOICE_KEYS))
    for key in [k for k in (*CHOICE_KEYS, *OPTIONAL_CHOICE_KEYS) if k in info["choices"]]:
        cap = info["supernet"].get(key)
        tail = f"   (supernet {cap})" if cap is not None else ""
        lines.append(f"  {key:<{width}}  {info['choices'][key]}{tail}")
    lines.append(f"  size: {info['size']} distinct subnets (~10^{info['size_log10']})")
    lines.append(f"  features: {info['num_features']}; baselines: {', '.join(info['baselines'])}")
    lines.append(f"  largest:  {json.dumps(info['largest'])}")
    lines.append(f"  smallest: {json.dumps(info['smallest'])}")
    return "\n".join(lines)


def _show(args: argparse.Namespace) -> int:
    info = load_space(args.space).describe()
    print(json.dumps(info) if args.json else format_space(info))
    return 0


def _list(args: argparse.Namespace) -> int:
    for name in available_spaces():
        space = load_space(name)
        print(f"{name:<16} size ~10^{space.describe()['size_log10']:<8} {space.description}")
    return 0
