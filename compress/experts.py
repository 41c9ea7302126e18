"""Mixture-of-experts axes: which experts to keep per layer, and how wide each expert's FFN stays.

    minitron prune width --model DIR --calib DATA --out DIR --num-experts 6 --ffn-hidden-size 64

Scores, from the calibration data (`ExpertScores`, filled by a forward hook on each sparse block):
- an expert: the L2 norm, over every token, of what it adds to the block's output (its routing weight times its
  output; zero for a token not routed to it), so both how often the router picks it and how much it then
  writes count. Removing an expert removes exactly this from the block, before re-routing.
- an expert's neuron: the L2 norm, over the tokens routed to that expert, of the activation entering its down
  projection (the dense MLP's score, restricted to the expert's own tokens).
The hook recomputes the routed experts' activations from the block's input, so estimation costs about one extra
pass of the experts.

Cutting (`trim`): the router keeps the rows of the kept experts, in importance order, and the experts are
renumbered to match; each kept expert keeps its own best neurons. Removing an expert is the same as masking its
router logit to -inf (the softmax and the top-k then run over the others), and removing a neuron the same as
zeroing it; tests/compress/test_experts.py checks both on Mixtral and Qwen3-MoE, in both weight layouts.
"""

from __future__ import annotations

import torch
from minitron.core.families import Family, check_supported


def sparse_block(layer, family: Family):
    """The decoder layer's sparse block, wherever this transformers version keeps it, and its path."""
    for path in family.experts.blocks:
        block = getattr(layer, path, None)
        if block is not None and hasattr(block, "experts"):
            return path, block
    raise ValueError(f"no sparse block in {type(layer).__name__} at {', '.join(family.experts.blocks)}")


def expert_weights(block, family: Family, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expert j's gate [F, H], up [F, H] and down [H, F] weights (views, in either layout)."""
    experts = block.experts
    if hasattr(experts, "gate_up_proj"):  # transformers 5: fused 3-D parameters
        gate, up = experts.gate_up_proj[j].chunk(2, dim=0)
        return gate, up, experts.down_proj[j]
    module = experts[j]
    return tuple(getattr(module, name).weight for name in family.experts.per_expert)


def checkpoint_weight(model, name: str) -> torch.Tensor:
    """The weight a checkpoint names `model.layers.{i}.{block}.experts.{j}.{gate|up|down}.weight` (the per-expert
    layout of the hub's checkpoints and of ModelOpt's export), read from `model` in whichever layout it holds."""
    family = check_supported(model.config)
    parts = name.split(".")
    if not (family.experts and len(parts) == 8 and parts[4] == "experts" and parts[6] in family.experts.per_expert):
        raise KeyError(f"{name} is not a per-expert weight of {family.architecture}")
    _, block = sparse_block(model.model.layers[int(parts[2])], family)
    return expert_weights(block, family, int(parts[5]))[family.experts.per_expert.index(parts[6])]


def _activation(block, j: int):
    experts = block.experts
    return experts.act_fn if hasattr(experts, "act_fn") else experts[j].act_fn


def routing(block, family: Family, x: torch.Tensor, config) -> tuple[torch.Tensor, torch.Tensor]:
    """The router's choice for tokens x [N, H]: expert indices [N, k] and their weights [N, k], as the model's
    own block computes them (softmax over all experts, top-k, renormalized where the family does)."""
    probs = torch.softmax(torch.nn.functional.linear(x, block.gate.weight).float(), dim=-1)
    weights, chosen = torch.topk(probs, config.num_experts_per_tok, dim=-1)
    renormalize = family.experts.renormalize
    if renormalize is True or (isinstance(renormalize, str) and getattr(config, renormalize)):
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return chosen, weights


class ExpertScores:
    """Accumulates one sparse block's expert and neuron scores over calibration batches."""

    def __init__(self, block, family: Family, config):
        self.block, self.family, self.config = block, family, config
        experts, ffn = getattr(config, family.experts.count_key), getattr(config, family.experts.ffn_key)
        self.expert_sq = torch.zeros(experts, dtype=torch.float64)
        self.neuron_sq = torch.zeros(experts, ffn, dtype=torch.float64)

    @torch.no_grad()
    def add(self, _module, args, _output) -> None:
        x = args[0].reshape(-1, args[0].shape[-1])
        chosen, weights = routing(self.block, self.family, x, self.config)
        for j in chosen.unique().tolist():
            tokens, slot = torch.where(chosen == j)
            gate, up, down = expert_weights(self.block, self.family, j)
            xj = x[tokens]
            act = _activation(self.block, j)(xj @ gate.T) * (xj @ up.T)
            self.neuron_sq[j] += act.double().pow(2).sum(0)
            contribution = (act @ down.T) * weights[tokens, slot, None].to(act.dtype)
            self.expert_sq[j] += contribution.double().pow(2).sum()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(expert scores [E], neuron scores [E, F])."""
        return self.expert_sq.sqrt().float(), self.neuron_sq.sqrt().float()


@torch.no_grad()
def magnitude(layer, family: Family, experts: int, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight-only scores of one layer's experts: an expert's L2 over all its weights, a neuron's over its gate and
    up rows and down column. Adds each hidden channel's squared weights (router and experts) into `hidden`."""
    _, block = sparse_block(layer, family)
    router = block.gate.weight.float().pow(2)
    hidden += router.sum(0)
    expert_scores, neuron_scores = [], []
    for j in range(experts):
        gate, up, down = (w.float().pow(2) for w in expert_weights(block, family, j))
        neuron_scores.append((gate.sum(1) + up.sum(1) + down.sum(0)).sqrt())
        expert_scores.append((gate.sum() + up.sum() + down.sum() + router[j].sum()).sqrt())
        hidden += gate.sum(0) + up.sum(0) + down.sum(1)
    return torch.stack(expert_scores), torch.stack(neuron_scores)


def trim(inner: str, tensor: torch.Tensor, layer: int, plan, family: Family, prefix: str) -> dict[str, torch.Tensor]:
    """The kept part of one sparse-block parameter (`inner`: its path inside the layer), under its new name(s).
    `plan.experts[layer]` lists the kept experts in their new order; `plan.ffn[layer][j]` expert j's kept neurons."""
    block, _, rest = inner.partition(".")
    hidden, kept = plan.hidden, plan.experts[layer].tolist()
    ffn = plan.ffn[layer]
    if rest == "gate.weight":  # the router: one row per expert
        return {prefix + inner: tensor[kept].index_select(1, hidden)}
    if rest == "experts.gate_up_proj":  # [E, 2F, H]
        size = tensor.shape[1] // 2
        rows = [torch.cat([ffn[j], ffn[j] + size]) for j in kept]
        return {prefix + inner: torch.stack([tensor[j].index_select(0, r).index_select(1, hidden)
                                             for j, r in zip(kept, rows)])}
    if rest == "experts.down_proj":  # [E, H, F]
        return {prefix + inner: torch.stack([tensor[j].index_select(0, hidden).index_select(1, ffn[j])
                                             for j in kept])}
    _, index, name, kind = rest.split(".")  # experts.{j}.{gate|up|down}.weight: one module per expert
    j = int(index)
    if j not in kept:
        return {}
    down = name == family.experts.per_expert[2]
    rows, cols = (hidden, ffn[j]) if down else (ffn[j], hidden)
    new_name = f"{prefix}{block}.experts.{kept.index(j)}.{name}.{kind}"
    return {new_name: tensor.index_select(0, rows).index_select(1, cols)}
