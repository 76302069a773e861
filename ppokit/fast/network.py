"""Forward with cached activations and the hand-written backward of the MLP actor-critic.

Every function takes the parameters as a ``name -> tensor`` dict (the agent's parameter names)
and works on one agent (``x [M, D]``, weights ``[out, in]``) or on a population stacked along a
leading dimension (``x [K, M, D]``, weights ``[K, out, in]``, see :mod:`ppokit.fast.stacked`):
:func:`linear` and its two derivatives are the only places that tell the two apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ppokit.networks import MLP, FlattenEncoder

if TYPE_CHECKING:
    from ppokit.agent import Agent

ACTIVATIONS = ("tanh", "relu")  # the ones whose derivative the backward below knows
Params = dict[str, torch.Tensor]


def supports(agent: Agent) -> bool:
    """True when every trunk is ppokit's own MLP with tanh or ReLU on flat observations, and a
    Gaussian's log-std is the free, unclamped parameter (a state-dependent or clamped log-std takes
    the autograd path)."""
    trunks = [agent.actor_trunk] + ([agent.critic_trunk] if agent.critic_trunk is not None else [])
    if agent.log_std_head is not None or agent.log_std_bounds != (None, None):
        return False
    return all(isinstance(t[0], FlattenEncoder) and type(t[1]) is MLP and t[1].activation in ACTIVATIONS
               for t in trunks)


# ---------------------------------------------------------------------------- one layer, [M] or [K, M]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x W^T + b``: ``[M, in] -> [M, out]``, or ``[K, M, in] -> [K, M, out]`` per agent."""
    if x.dim() == 2:
        return torch.addmm(bias, x, weight.t())
    return torch.baddbmm(bias.unsqueeze(-2), x, weight.transpose(-1, -2))


def linear_param_grads(grad: torch.Tensor, x: torch.Tensor, weight_out: torch.Tensor, bias_out: torch.Tensor) -> None:
    """``dW = grad^T x`` and ``db = sum over samples of grad``, written into ``weight_out``/``bias_out``."""
    if grad.dim() == 2:
        torch.mm(grad.t(), x, out=weight_out)
        torch.sum(grad, 0, out=bias_out)
    else:
        weight_out.copy_(torch.bmm(grad.transpose(1, 2), x))
        bias_out.copy_(grad.sum(1))


def linear_input_grad(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``dx = grad W``."""
    return torch.mm(grad, weight) if grad.dim() == 2 else torch.bmm(grad, weight)


# ---------------------------------------------------------------------------- the MLP trunks and heads


def _layers(mlp: MLP, prefix: str, params: Params) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(params[f"{prefix}.1.layers.{i}.weight"], params[f"{prefix}.1.layers.{i}.bias"])
            for i in range(len(mlp.layers))]


def mlp_forward_cached(mlp: MLP, prefix: str, params: Params, x: torch.Tensor) -> list[torch.Tensor]:
    """Inputs of every layer plus the output: ``[x [.., M, D], h1 [.., M, H1], ..., hL]``."""
    outputs = [x]
    for weight, bias in _layers(mlp, prefix, params):
        outputs.append(mlp.act(linear(outputs[-1], weight, bias)))
    return outputs


def mlp_backward(mlp: MLP, prefix: str, params: Params, outputs: list[torch.Tensor], grad: torch.Tensor,
                 out: Params) -> None:
    """Write every layer's ``dW, db`` into ``out`` (by parameter name) given ``dLoss/dhL``."""
    layers = _layers(mlp, prefix, params)
    for i in range(len(layers) - 1, -1, -1):
        h = outputs[i + 1]
        # d tanh(z)/dz = 1 - tanh(z)^2; d relu(z)/dz = [z > 0] = [relu(z) > 0] (one fused op each)
        if mlp.activation == "tanh":
            grad = torch.ops.aten.tanh_backward(grad, h)
        else:
            grad = torch.ops.aten.threshold_backward(grad, h, 0)
        linear_param_grads(grad, outputs[i], out[f"{prefix}.1.layers.{i}.weight"], out[f"{prefix}.1.layers.{i}.bias"])
        if i > 0:
            grad = linear_input_grad(grad, layers[i][0])


@torch.no_grad()
def forward_cached(agent: Agent, params: Params, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """The agent's outputs on flat, preprocessed inputs ``x [.., M, D]`` without an autograd
    graph: ``(policy_out [.., M, P], values [.., M], cache)``, the cache holding the activations
    that :func:`backward_cached` needs."""
    actor = mlp_forward_cached(agent.actor_trunk[1], "actor_trunk", params, x)
    critic = actor
    if agent.critic_trunk is not None:
        critic = mlp_forward_cached(agent.critic_trunk[1], "critic_trunk", params, x)
    values = linear(critic[-1], params["value_head.weight"], params["value_head.bias"]).squeeze(-1)
    return policy_head(agent, params, actor[-1]), values, (actor, critic)


def policy_head(agent: Agent, params: Params, features: torch.Tensor) -> torch.Tensor:
    """The policy head on the actor's features ``[.., M, H]``: ``policy_out [.., M, P]`` (with the log-std)."""
    policy_out = linear(features, params["policy_head.weight"], params["policy_head.bias"])
    if agent.log_std is not None:
        log_std = params["log_std"]
        log_std = log_std if policy_out.dim() == 2 else log_std.unsqueeze(-2)
        policy_out = torch.cat([policy_out, log_std.expand_as(policy_out)], dim=-1)
    return policy_out


def policy_forward(agent: Agent, params: Params, x: torch.Tensor) -> torch.Tensor:
    """The actor alone on flat, preprocessed inputs ``x [.., M, D]``: ``policy_out [.., M, P]``."""
    features = x
    for weight, bias in _layers(agent.actor_trunk[1], "actor_trunk", params):
        features = agent.actor_trunk[1].act(linear(features, weight, bias))
    return policy_head(agent, params, features)


def gradient_targets(agent: Agent, targets: Params) -> Params:
    """Where :func:`backward_cached` writes each parameter's gradient: ``targets`` (e.g. views of a
    flat buffer) for the parameters a step updates, scratch tensors of the same shape for the
    others (their gradients are computed on the way, not used)."""
    return {name: targets[name] if name in targets else torch.empty_like(p.detach())
            for name, p in agent.named_parameters()}


@torch.no_grad()
def backward_cached(agent: Agent, params: Params, cache: tuple, grad_policy_out: torch.Tensor,
                    grad_values: torch.Tensor, out: Params) -> None:
    """Parameter gradients from ``dLoss/dpolicy_out [.., M, P]`` and ``dLoss/dvalues [.., M]``,
    written into ``out`` (by parameter name, see :func:`gradient_targets`)."""
    actor, critic = cache
    grad_mean = grad_policy_out
    if agent.log_std is not None:
        action_dim = agent.log_std.shape[0]
        grad_mean = grad_policy_out[..., :action_dim]
        out["log_std"].copy_(grad_policy_out[..., action_dim:].sum(-2))
    grad_values = grad_values.unsqueeze(-1)
    linear_param_grads(grad_mean, actor[-1], out["policy_head.weight"], out["policy_head.bias"])
    linear_param_grads(grad_values, critic[-1], out["value_head.weight"], out["value_head.bias"])
    grad_actor = linear_input_grad(grad_mean, params["policy_head.weight"])
    grad_critic = linear_input_grad(grad_values, params["value_head.weight"])
    if agent.critic_trunk is None:
        mlp_backward(agent.actor_trunk[1], "actor_trunk", params, actor, grad_actor + grad_critic, out)
    else:
        mlp_backward(agent.actor_trunk[1], "actor_trunk", params, actor, grad_actor, out)
        mlp_backward(agent.critic_trunk[1], "critic_trunk", params, critic, grad_critic, out)
