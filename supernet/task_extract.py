"""Per-task extraction (Kudugunta et al. 2021): what one task of a task-routed model uses.

In a task-routed MoE layer the router reads only the sentence's tag, so for one tag every
token goes to the same top-k experts with the same gates. The layer is then one FFN over
the concatenated hidden units of those experts, with each expert's gate folded into its
output matrix and bias:

    y = sum_i g_i (W2_i relu(W1_i x + b1_i) + b2_i)
      = [g_1 W2_1 | ... | g_k W2_k] relu([W1_1; ...; W1_k] x + [b1_1; ...; b1_k]) + sum_i g_i b2_i

(relu acts per hidden unit, so concatenation is exact). `for_task` turns every
task-routed layer of a static `Transformer` into that dense FFN and returns a model of
the smaller config: what serving one language costs, with no distillation. Layers routed
by token or sentence are kept as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F

from search_spaces.config import SubnetConfig
from supernet import core
from supernet.transformer import Expert, MoE, QuantExpert, Transformer

if TYPE_CHECKING:
    from supernet.supertransformer import SuperTransformer

__all__ = ["Choices", "task_choices", "task_choice", "task_config", "served_config",
           "for_task"]


Choices = dict[tuple[str, int], tuple[tuple[int, ...], tuple[float, ...]]]


def task_choices(weights: core.ModelWeights, config: SubnetConfig, tag: int, *,
                 normalize_gates: bool) -> Choices:
    """Per task-routed layer ``(side, i)``: the experts (ascending) and gates that task
    ``tag`` (a token id) uses, as the router computes them (fp32) from ``weights`` (a
    supernet's views for ``config`` or a static model's own tensors)."""
    out: Choices = {}
    for side, stack in (("encoder", weights.encoder), ("decoder", weights.decoder)):
        if config.side(side).routing != "task":
            continue
        row = core.task_rows(torch.tensor([tag], device=weights.embed.device),
                             weights.embed[:, : stack.dim]).float()
        for i, layer in enumerate(stack.layers):
            moe = layer.moe
            if moe.router_w is None or moe.router_b is None:
                continue  # a one-expert layer
            with torch.no_grad():
                logits = F.linear(row, moe.router_w.float(), moe.router_b.float())
                gates, experts = torch.softmax(logits, dim=-1)[0].topk(moe.top_k)
                if normalize_gates and moe.top_k > 1:
                    gates = gates / gates.sum()
            order = experts.argsort()
            out[(side, i)] = (tuple(int(e) for e in experts[order]),
                              tuple(float(g) for g in gates[order]))
    return out


def task_choice(model: Transformer, side: str, layer: int, tag: int
                ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """`task_choices` of one layer of a static model; ValueError unless it is task-routed."""
    choices = task_choices(model.weights(), model.config, tag,
                           normalize_gates=model.options.normalize_gates)
    if (side, layer) not in choices:
        raise ValueError(f"{side} layer {layer} is not task-routed")
    return choices[(side, layer)]


def served_config(model: SuperTransformer, config: SubnetConfig, tag: int) -> SubnetConfig:
    """The config `for_task` would give ``config`` of supernet ``model`` for ``tag``:
    what serving that task costs (``config`` itself when nothing is task-routed). Reads
    the router decisions from the supernet's views; copies no weights."""
    choices = task_choices(model.weights(config, quantize=False), config, tag,
                           normalize_gates=model.options.normalize_gates)
    return task_config(config, choices) if choices else config


def _moe(model: Transformer, side: str, layer: int) -> MoE:
    layers = model.encoder_layers if side == "encoder" else model.decoder_layers
    return layers[layer].moe  # type: ignore[return-value]


def for_task(model: Transformer, tag: int, *, name: str | None = None) -> Transformer:
    """A static model that computes what ``model`` computes on sources tagged ``tag`` (its
    first source token), with every task-routed layer one dense FFN (see the module doc).
    Same device and dtype, eval mode. ``name`` (the task, e.g. "fr") only labels errors.

    A layer whose task uses several quantized experts cannot merge (each expert has its
    own per-channel scales): ValueError naming the layer."""
    label = name or f"tag {tag}"
    if not 0 <= tag < model.vocab_size:
        raise ValueError(f"{label}: token id {tag} is outside the vocabulary of {model.vocab_size}")
    config = model.config
    merged = task_choices(model.weights(), config, tag,
                          normalize_gates=model.options.normalize_gates)
    if not merged:
        raise ValueError(f"{label}: the model has no task-routed layer (encoder_routing "
                         f"{config.encoder_routing!r}, decoder_routing {config.decoder_routing!r})")
    out = Transformer(task_config(config, merged), model.vocab_size, options=model.options,
                      device="meta")
    out.to_empty(device=model.embed.device)
    out.to(dtype=model.embed.dtype)
    source, target = model.state_dict(), out.state_dict()
    with torch.no_grad():
        for key, tensor in target.items():
            where = _merged_layer(key, merged)
            if where is None:
                tensor.copy_(source[key])
        for (side, i), (experts, gates) in merged.items():
            _fold(_moe(model, side, i), _moe(out, side, i), experts, gates, f"{label}: {side} "
                  f"layer {i}")
    return out.eval()


def task_config(config: SubnetConfig, merged: Choices) -> SubnetConfig:
    """``config`` with each merged layer one expert of the chosen experts' summed width."""
    out = config
    for side in config.sides():
        dims, bits, top_k = list(side.expert_dims), list(side.expert_bits), list(side.top_k)
        for (s, i), (experts, _) in merged.items():
            if s == side.name:
                dims[i] = (sum(dims[i][e] for e in experts),)
                chosen = {bits[i][e] for e in experts}
                bits[i] = (chosen.pop() if len(chosen) == 1 else 32,)
                top_k[i] = 1
        out = out.with_side(side.name, expert_dims=tuple(dims), expert_bits=tuple(bits),
                            top_k=tuple(top_k))
    return out


def _merged_layer(key: str, merged: dict) -> tuple[str, int] | None:
    """(side, layer) when state-dict ``key`` belongs to a merged layer's MoE, else None."""
    parts = key.split(".")
    if len(parts) > 3 and parts[2] == "moe" and parts[0] in ("encoder_layers", "decoder_layers"):
        where = (parts[0].split("_")[0], int(parts[1]))
        return where if where in merged else None
    return None


def _fold(src: MoE, dst: MoE, experts: tuple[int, ...], gates: tuple[float, ...],
          where: str) -> None:
    """Writes ``src``'s ``experts`` (gated by ``gates``) into ``dst``'s one expert."""
    chosen = [cast("Expert | QuantExpert", src.experts[e]) for e in experts]
    target = dst.experts[0]
    if any(isinstance(e, QuantExpert) for e in chosen):
        if len(chosen) > 1:
            raise ValueError(f"{where}: the task uses {len(chosen)} quantized experts, which "
                             "cannot merge into one (each has its own per-channel scales); "
                             "extract a top-1 or full-precision subnet")
        e, g = cast(QuantExpert, chosen[0]), gates[0]
        assert isinstance(target, QuantExpert)  # task_config kept the expert's bits
        for name in ("qweight", "scale"):
            getattr(target.fc1, name).copy_(getattr(e.fc1, name))
            getattr(target.fc2, name).copy_(getattr(e.fc2, name))
        target.fc1.bias.copy_(e.fc1.bias)
        target.fc2.scale.mul_(g)  # g W2 = (g s) q, per output channel
        target.fc2.bias.copy_(e.fc2.bias * g)
        return
    dense = [cast(Expert, e) for e in chosen]
    assert isinstance(target, Expert)
    target.fc1.weight.copy_(torch.cat([e.fc1.weight for e in dense]))
    target.fc1.bias.copy_(torch.cat([e.fc1.bias for e in dense]))
    target.fc2.weight.copy_(torch.cat([e.fc2.weight * g for e, g in zip(dense, gates,
                                                                         strict=True)], dim=1))
    target.fc2.bias.copy_(torch.stack([e.fc2.bias * g for e, g in zip(dense, gates,
                                                                       strict=True)]).sum(0))
