"""Forward with cached activations and the hand-written backward of the MLP actor-critic."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ppokit.networks import MLP, FlattenEncoder

if TYPE_CHECKING:
    from ppokit.agent import Agent

ACTIVATIONS = ("tanh", "relu")  # the ones whose derivative the backward below knows


def supports(agent: Agent) -> bool:
    """True when every trunk is ppokit's own MLP with tanh or ReLU on flat observations."""
    trunks = [agent.actor_trunk] + ([agent.critic_trunk] if agent.critic_trunk is not None else [])
    return all(isinstance(t[0], FlattenEncoder) and type(t[1]) is MLP and t[1].activation in ACTIVATIONS
               for t in trunks)


def mlp_forward_cached(mlp: MLP, x: torch.Tensor) -> list[torch.Tensor]:
    """Inputs of every layer plus the output: ``[x [M, D], h1 [M, H1], ..., hL [M, HL]]``."""
    outputs = [x]
    for layer in mlp.layers:
        outputs.append(mlp.act(torch.addmm(layer.bias, outputs[-1], layer.weight.t())))
    return outputs


def mlp_backward(mlp: MLP, outputs: list[torch.Tensor], grad: torch.Tensor, out: list[torch.Tensor]) -> None:
    """Write ``[dW1, db1, ..., dWL, dbL]`` (parameter order) into ``out`` given ``dLoss/dhL [M, HL]``."""
    for i in range(len(mlp.layers) - 1, -1, -1):
        h = outputs[i + 1]
        # d tanh(z)/dz = 1 - tanh(z)^2; d relu(z)/dz = [z > 0] = [relu(z) > 0] (one fused op each)
        if mlp.activation == "tanh":
            grad = torch.ops.aten.tanh_backward(grad, h)
        else:
            grad = torch.ops.aten.threshold_backward(grad, h, 0)
        torch.mm(grad.t(), outputs[i], out=out[2 * i])
        torch.sum(grad, 0, out=out[2 * i + 1])
        if i > 0:
            grad = torch.mm(grad, mlp.layers[i].weight)


@torch.no_grad()
def forward_cached(agent: Agent, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """``agent(obs)`` without an autograd graph: ``(policy_out [M, P], values [M], cache)``,
    the cache holding the activations that :func:`backward_cached` needs."""
    x = agent.preprocess(obs)
    actor = mlp_forward_cached(agent.actor_trunk[1], agent.actor_trunk[0](x))
    critic = actor
    if agent.critic_trunk is not None:
        critic = mlp_forward_cached(agent.critic_trunk[1], agent.critic_trunk[0](x))
    policy_out = agent.policy_out(actor[-1])
    values = torch.addmm(agent.value_head.bias, critic[-1], agent.value_head.weight.t()).squeeze(-1)
    return policy_out, values, (actor, critic)


class GradientBuffers:
    """Where :func:`backward_cached` writes each parameter's gradient, resolved once: ``targets``
    (parameter name -> tensor of its shape, e.g. views of a flat buffer) for the parameters a step
    updates, scratch tensors for the others (their gradients are computed on the way, not used)."""

    def __init__(self, agent: Agent, targets: dict[str, torch.Tensor]):
        self.by_name = {name: targets[name] if name in targets else torch.empty_like(p.detach())
                        for name, p in agent.named_parameters()}
        # Per trunk, its MLP's gradients in the MLP's parameter order (what mlp_backward writes).
        self.trunks = {prefix: [self.by_name[f"{prefix}.1.{name}"] for name, _ in trunk[1].named_parameters()]
                       for prefix, trunk in (("actor_trunk", agent.actor_trunk), ("critic_trunk", agent.critic_trunk))
                       if trunk is not None}


@torch.no_grad()
def backward_cached(
    agent: Agent, cache: tuple, grad_policy_out: torch.Tensor, grad_values: torch.Tensor, out: GradientBuffers
) -> None:
    """Parameter gradients from ``dLoss/dpolicy_out [M, P]`` and ``dLoss/dvalues [M]``, written into ``out``."""
    actor, critic = cache
    grads = out.by_name
    grad_mean = grad_policy_out
    if agent.log_std is not None:
        action_dim = agent.log_std.shape[0]
        grad_mean = grad_policy_out[:, :action_dim]
        torch.sum(grad_policy_out[:, action_dim:], 0, out=grads["log_std"])
    grad_values = grad_values.unsqueeze(-1)
    torch.mm(grad_mean.t(), actor[-1], out=grads["policy_head.weight"])
    torch.sum(grad_mean, 0, out=grads["policy_head.bias"])
    torch.mm(grad_values.t(), critic[-1], out=grads["value_head.weight"])
    torch.sum(grad_values, 0, out=grads["value_head.bias"])
    grad_actor = torch.mm(grad_mean, agent.policy_head.weight)
    grad_critic = torch.mm(grad_values, agent.value_head.weight)
    if agent.critic_trunk is None:
        mlp_backward(agent.actor_trunk[1], actor, grad_actor + grad_critic, out.trunks["actor_trunk"])
    else:
        mlp_backward(agent.actor_trunk[1], actor, grad_actor, out.trunks["actor_trunk"])
        mlp_backward(agent.critic_trunk[1], critic, grad_critic, out.trunks["critic_trunk"])
