"""PPO's loss (``-L^CLIP + c1 * L^VF - c2 * H``, ppokit.algos.ppo) differentiated by hand."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ppokit.algos.common import HUBER_DELTA, huber
from ppokit.batch import masked_mean, policy_advantages
from ppokit.distributions import ActionHead, approx_kl
from ppokit.fast.heads import terms, terms_grad

if TYPE_CHECKING:
    from ppokit.algos.ppo import PPOConfig
    from ppokit.batch import Minibatch


@torch.no_grad()
def output_gradients(
    cfg: PPOConfig,
    head: ActionHead,
    policy_out: torch.Tensor,
    values: torch.Tensor,
    minibatch: Minibatch,
    hyper: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The gradient of PPO's loss with respect to ``policy_out [M, P]`` and ``values [M]``, plus
    the statistics the loss function reports (skipped when ``minibatch.want_stats`` is False).

    With w the mean weights and A the (normalized) advantages, per sample:
    ``dL/dlog_prob = -w * A * r`` where the unclipped term is the minimum (or r is inside the
    clip range), else 0; ``dL/dentropy = -ent_coef * w``; ``dL/dV = vf_coef * w * (V - R)`` (or
    through the clipped value when that term is the larger); with ``value_loss: huber`` the error
    ``e`` is clamped to ``[-1, 1]`` (the Huber loss's derivative).
    """
    mean_weights = minibatch.mean_weights
    log_prob, entropy, cache = terms(head, policy_out, minibatch.actions)
    log_ratio = log_prob - minibatch.log_probs
    ratio = torch.exp(log_ratio)
    advantages = policy_advantages(minibatch, cfg.norm_adv)
    unclipped = ratio * advantages
    coef_log_prob = -mean_weights * unclipped
    if cfg.clip_coef is not None:
        c = hyper["clip_coef"]
        clipped_ratio = torch.clamp(ratio, 1 - c, 1 + c)
        clipped = clipped_ratio * advantages
        inside = clipped_ratio == ratio
        coef_log_prob = coef_log_prob * ((unclipped < clipped) | inside)  # where the gradient flows
    grad_policy = terms_grad(head, cache, coef_log_prob, -cfg.ent_coef * mean_weights)

    error = values - minibatch.returns
    huber_loss = cfg.value_loss == "huber"
    if cfg.clip_vloss and cfg.clip_coef is not None:
        old = minibatch.values
        c = hyper["clip_coef"]
        clipped_error = old + torch.clamp(values - old, -c, c) - minibatch.returns
        use_clipped = clipped_error.square() > error.square()
        moving = (values - old).abs() <= c
        squared = torch.where(use_clipped, clipped_error.square(), error.square())
        error_grad = torch.where(use_clipped, clipped_error * moving, error)
        loss_error = torch.where(use_clipped, clipped_error, error) if huber_loss else error
    else:
        squared, error_grad, loss_error = error.square(), error, error
    if huber_loss:  # the Huber loss's derivative; moving is 0 or 1, so clamping after it is the same
        error_grad = torch.clamp(error_grad, -HUBER_DELTA, HUBER_DELTA)
    grad_values = cfg.vf_coef * mean_weights * error_grad
    if not minibatch.want_stats:
        return grad_policy, grad_values, {}
    if cfg.clip_coef is None:
        surrogate, clip_fraction = unclipped, torch.zeros((), device=ratio.device)
    else:
        surrogate = torch.minimum(unclipped, clipped)
        clip_fraction = masked_mean((~inside).float(), mean_weights)
    stats = {
        "policy_loss": -masked_mean(surrogate, mean_weights),
        "value_loss": masked_mean(huber(loss_error), mean_weights) if huber_loss
        else 0.5 * masked_mean(squared, mean_weights),
        "entropy": masked_mean(entropy, mean_weights),
        "approx_kl": masked_mean(approx_kl(log_ratio), mean_weights),
        "clip_fraction": clip_fraction,
    }
    return grad_policy, grad_values, stats
