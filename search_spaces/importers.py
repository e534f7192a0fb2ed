"""Import the subnet YAML files that HAT and AutoMoE publish (and write them back).

HAT (``configs/<task>/subtransformer/*.yml``) keys, per-layer values as lists::

    encoder-embed-dim-subtransformer: 512
    encoder-layer-num-subtransformer: 6
    encoder-ffn-embed-dim-all-subtransformer: [1024, 1024, ...]
    encoder-self-attention-heads-all-subtransformer: [4, 4, ...]
    decoder-ende-attention-heads-all-subtransformer: [4, 4, 4]
    decoder-arbitrary-ende-attn-all-subtransformer: [2, -1, -1]    # -1/1/2 -> 1/2/3

AutoMoE adds ``{encoder,decoder}-n-experts`` (experts per layer, default 1),
``-num-experts-to-route`` (top-k, default 1) and ``-each-expert-ffn-dim-listoflist``:
one string per layer with the experts' dims joined by ``_`` (``'3072_1024'``, also
seen bracketed as ``'[3072_1024]'``); without it every expert of a layer has the layer's
FFN dim. Lists longer than the active layer count are truncated (the reference writes
inactive genes too); shorter ones are an error. ``qkv-dim`` is optional when the space
has a single qkv choice. AutoMoE's unused switches (``-drop-mha-sublayer``,
``-drop-ffn-sublayer``, ``-std-vs-dummy-experts``) are accepted only at their "off" value 1.

`read_subnet` is the one reader of subnet files: `SubnetConfig` JSON, an exported model's
``config.json`` (or its directory), or such a YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from search_spaces.config import SideConfig, SubnetConfig
from search_spaces.files import read_json
from search_spaces.space import SearchSpace

__all__ = ["import_hat_yaml", "import_hat_dict", "to_hat_dict", "to_hat_yaml", "HAT_ENDE_TO_LAYERS",
           "SubnetFile", "read_subnet"]

HAT_ENDE_TO_LAYERS = {-1: 1, 1: 2, 2: 3}
_LAYERS_TO_HAT_ENDE = {v: k for k, v in HAT_ENDE_TO_LAYERS.items()}
_SIDES = ("encoder", "decoder")
_OFF_SWITCHES = tuple(
    f"{s}-{k}" for s in _SIDES for k in ("drop-mha-sublayer", "drop-ffn-sublayer", "std-vs-dummy-experts")
)


def _known_keys() -> set[str]:
    keys = {"qkv-dim", "decoder-ende-attention-heads-all-subtransformer",
            "decoder-arbitrary-ende-attn-all-subtransformer", *_OFF_SWITCHES}
    for s in _SIDES:
        keys |= {f"{s}-embed-dim-subtransformer", f"{s}-layer-num-subtransformer",
                 f"{s}-ffn-embed-dim-all-subtransformer",
                 f"{s}-self-attention-heads-all-subtransformer", f"{s}-n-experts",
                 f"{s}-num-experts-to-route", f"{s}-each-expert-ffn-dim-listoflist"}
    return keys


@dataclass(frozen=True)
class SubnetFile:
    """A subnet read from a file (`read_subnet`).

    Attributes:
        config: the architecture.
        path: the file read (``config.json`` when a model directory was given).
        options: an exported model's options (the ``options`` object of its ``config.json``,
            read by `supernet.options.ModelOptions.from_dict`); None for a bare subnet file.
        vocab_size: an exported model's vocabulary; None for a bare subnet file.
    """

    config: SubnetConfig
    path: Path
    options: dict[str, Any] | None = None
    vocab_size: int | None = None


def read_subnet(path: str | Path, space: SearchSpace | None = None) -> SubnetFile:
    """Reads a subnet file: `SubnetConfig.to_json` output, an exported model's
    ``config.json`` (or the model directory; its ``architecture``, ``options`` and
    ``vocab_size`` are read), or a HAT/AutoMoE subnet YAML (``.yml``/``.yaml``, which needs
    ``space``). With ``space`` the subnet is validated against it.

    Raises FileNotFoundError for a missing file and ValueError naming the file, the key and
    what was expected otherwise."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such subnet config file")
    if p.suffix in (".yml", ".yaml"):
        if space is None:
            raise ValueError(f"{p}: a HAT/AutoMoE subnet YAML is read against a search space; "
                             f"convert it with `automoe subnet import {p} --space SPACE`")
        return SubnetFile(import_hat_yaml(p, space), p)
    data = read_json(p)  # ValueError naming the file
    options = vocab_size = None
    source = str(p)
    if isinstance(data, dict) and "architecture" in data:  # an exported model's config.json
        options = data.get("options")
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"{p}: key 'options' must be a JSON object, got {options!r}")
        vocab_size = data.get("vocab_size")
        if vocab_size is not None and (isinstance(vocab_size, bool)
                                       or not isinstance(vocab_size, int) or vocab_size < 1):
            raise ValueError(f"{p}: key 'vocab_size' must be an integer >= 1, got "
                             f"{vocab_size!r}")
        data, source = data["architecture"], f"{p}: 'architecture'"
    config = SubnetConfig.from_dict(data, source=source)
    if space is not None:
        space.validate(config, source=str(p))
    return SubnetFile(config, p, options, vocab_size)


def import_hat_yaml(path: str | Path, space: SearchSpace) -> SubnetConfig:
    """A HAT/AutoMoE subnet YAML file -> `SubnetConfig`, validated against ``space``.

    Raises FileNotFoundError for a missing file and ValueError naming the file, the key
    and the bad value otherwise."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"subnet file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{p}: not valid YAML ({err})") from None
    return import_hat_dict(data, space, source=str(p))


def import_hat_dict(data: Any, space: SearchSpace, *, source: str = "<hat yaml>") -> SubnetConfig:
    """The parsed YAML mapping -> `SubnetConfig` (see `import_hat_yaml`)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of HAT subnet keys, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - _known_keys())
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; expected HAT/AutoMoE subnet keys "
                         f"such as 'encoder-embed-dim-subtransformer'")
    for key in _OFF_SWITCHES:
        if key in data and any(v != 1 for v in _int_list(data, key, source)):
            raise ValueError(f"{source}: key '{key}' = {data[key]!r}: only the 'off' value 1 is "
                             f"supported (AutoMoE's pipeline never turns it on)")
    if "qkv-dim" in data:
        qkv = _int(data, "qkv-dim", source)
    elif len(space.qkv_dim) == 1:
        qkv = space.qkv_dim[0]
    else:
        raise ValueError(f"{source}: key 'qkv-dim' is missing and space {space.name!r} has several "
                         f"qkv choices {list(space.qkv_dim)}")
    encoder, decoder = (_import_side(data, side, source) for side in _SIDES)
    config = SubnetConfig.from_sides(encoder, decoder, qkv_dim=qkv)
    space.validate(config, source=source)
    return config


def _import_side(data: Mapping, side: str, source: str) -> SideConfig:
    """One side of `import_hat_dict`'s config, read from the side's HAT keys."""
    layers = _int(data, f"{side}-layer-num-subtransformer", source)
    if layers < 1:
        raise ValueError(f"{source}: key '{side}-layer-num-subtransformer' = {layers} must be >= 1")
    embed_dim = _int(data, f"{side}-embed-dim-subtransformer", source)
    heads = _per_layer(data, f"{side}-self-attention-heads-all-subtransformer", layers, source)
    experts = _per_layer(data, f"{side}-n-experts", layers, source, default=1)
    top_k = _per_layer(data, f"{side}-num-experts-to-route", layers, source, default=1)
    expert_dims = _expert_dims(data, side, layers, experts, source)
    if side == "encoder":
        return SideConfig(name=side, embed_dim=embed_dim, expert_dims=expert_dims, heads=heads,
                          top_k=top_k)
    cross_heads = _per_layer(data, "decoder-ende-attention-heads-all-subtransformer", layers,
                             source)
    key = "decoder-arbitrary-ende-attn-all-subtransformer"
    raw = _per_layer(data, key, layers, source)
    bad = [v for v in raw if v not in HAT_ENDE_TO_LAYERS]
    if bad:
        raise ValueError(f"{source}: key '{key}' has value {bad[0]}; expected -1, 1 or 2 "
                         f"(attend to the last 1, 2 or 3 encoder layers)")
    return SideConfig(name=side, embed_dim=embed_dim, expert_dims=expert_dims, heads=heads,
                      top_k=top_k, cross_heads=cross_heads,
                      ende_attn=tuple(HAT_ENDE_TO_LAYERS[v] for v in raw))


def to_hat_dict(config: SubnetConfig) -> dict[str, Any]:
    """The AutoMoE subnet YAML mapping of ``config`` (inverse of `import_hat_dict`).

    Raises ValueError for experts below 32 bits or routing other than by token: the format
    has no precision or routing key."""
    c = config
    if (c.encoder_routing, c.decoder_routing) != ("token", "token"):
        raise ValueError(f"subnet {c.key()}: HAT/AutoMoE subnet YAML has no routing key; only "
                         f"token-routed subnets can be written, got encoder_routing "
                         f"{c.encoder_routing!r}, decoder_routing {c.decoder_routing!r}")
    if not c.is_full_precision:
        raise ValueError(f"subnet {c.key()}: HAT/AutoMoE subnet YAML has no expert precision; "
                         f"only full-precision (32-bit) subnets can be written, got "
                         f"encoder_expert_bits {c.to_dict()['encoder_expert_bits']}, "
                         f"decoder_expert_bits {c.to_dict()['decoder_expert_bits']}")
    out: dict[str, Any] = {"qkv-dim": c.qkv_dim}
    for view in c.sides():
        side, dims = view.name, view.expert_dims
        out[f"{side}-embed-dim-subtransformer"] = view.embed_dim
        out[f"{side}-layer-num-subtransformer"] = view.layers
        out[f"{side}-ffn-embed-dim-all-subtransformer"] = [max(d) for d in dims]
        out[f"{side}-self-attention-heads-all-subtransformer"] = list(view.heads)
        if side == "decoder":
            out["decoder-ende-attention-heads-all-subtransformer"] = list(view.cross_heads)
            out["decoder-arbitrary-ende-attn-all-subtransformer"] = [
                _LAYERS_TO_HAT_ENDE[a] for a in view.ende_attn]
        out[f"{side}-n-experts"] = list(view.experts)
        out[f"{side}-num-experts-to-route"] = list(view.top_k)
        out[f"{side}-each-expert-ffn-dim-listoflist"] = ["_".join(map(str, d)) for d in dims]
    return out


def to_hat_yaml(config: SubnetConfig) -> str:
    return yaml.safe_dump(to_hat_dict(config), sort_keys=False, default_flow_style=None)


# ---- value parsing ---------------------------------------------------------------------
def _int(data: Mapping, key: str, source: str) -> int:
    if key not in data:
        raise ValueError(f"{source}: missing key '{key}'")
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{source}: key '{key}' must be an integer, got {v!r}")
    return v


def _int_list(data: Mapping, key: str, source: str) -> list[int]:
    v = data[key]
    if isinstance(v, str):  # some writers store the Python repr of the list
        v = _safe_load(v, key, source)
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
        raise ValueError(f"{source}: key '{key}' must be a list of integers, got {data[key]!r}")
    return v


def _per_layer(data: Mapping, key: str, layers: int, source: str,
               default: int | None = None) -> tuple[int, ...]:
    if key not in data:
        if default is None:
            raise ValueError(f"{source}: missing key '{key}'")
        return (default,) * layers
    values = _int_list(data, key, source)
    if len(values) < layers:
        raise ValueError(f"{source}: key '{key}' = {values} has {len(values)} entries, fewer than "
                         f"the {layers} active layers")
    return tuple(values[:layers])


def _safe_load(text: str, key: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError(f"{source}: key '{key}' = {text!r} is not a list") from None


def _expert_item(item: Any, key: str, i: int, source: str) -> tuple[int, ...]:
    """One layer's expert dims: ``3072``, ``'3072_1024'``, ``'[3072_1024]'`` or ``[3072, 1024]``."""
    if isinstance(item, int) and not isinstance(item, bool):
        return (item,)
    if isinstance(item, list) and item and all(isinstance(x, int) and not isinstance(x, bool)
                                                for x in item):
        return tuple(item)
    if isinstance(item, str):
        parts = item.strip().strip("'\"").strip("[]").replace(",", "_").split("_")
        try:
            dims = tuple(int(p.strip()) for p in parts)
        except ValueError:
            dims = ()
        if dims:
            return dims
    raise ValueError(f"{source}: key '{key}'[{i}] = {item!r}: expected expert dims joined by '_' "
                     f"such as '3072_1024'")


def _expert_dims(data: Mapping, side: str, layers: int, experts: tuple[int, ...],
                 source: str) -> tuple[tuple[int, ...], ...]:
    key = f"{side}-each-expert-ffn-dim-listoflist"
    n_key = f"{side}-n-experts"
    if key not in data:
        ffn = _per_layer(data, f"{side}-ffn-embed-dim-all-subtransformer", layers, source)
        return tuple((d,) * n for d, n in zip(ffn, experts, strict=True))
    raw = data[key]
    if isinstance(raw, str):
        raw = _safe_load(raw, key, source)
    if not isinstance(raw, list):
        raise ValueError(f"{source}: key '{key}' must be a list (one entry per layer), got {data[key]!r}")
    if len(raw) < layers:
        raise ValueError(f"{source}: key '{key}' has {len(raw)} entries, fewer than the {layers} "
                         f"active layers")
    dims = tuple(_expert_item(item, key, i, source) for i, item in enumerate(raw[:layers]))
    if n_key in data:
        for i, (d, n) in enumerate(zip(dims, experts, strict=True)):
            if len(d) != n:
                raise ValueError(f"{source}: key '{key}'[{i}] lists {len(d)} expert dims {list(d)} "
                                 f"but '{n_key}'[{i}] = {n}")
    return dims
