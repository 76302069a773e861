"""Log-probability and entropy of each action head with their derivatives by hand.

``terms(head, out, actions)`` gives ``(log_prob [M], entropy [M], cache)``; ``terms_grad(head,
cache, a [M], b [M])`` gives ``a * d log_prob / d out + b * d entropy / d out`` ``[M, P]``: all
that a loss made of log-probabilities and entropies needs to reach the network outputs.
"""

from __future__ import annotations

import torch

from ppokit.distributions import LOG_2PI, ActionHead, CategoricalHead, DiagGaussianHead, MultiCategoricalHead


def _categorical_terms(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    entropy = -(p * log_p).sum(-1)
    index = actions.unsqueeze(-1)
    return log_p.gather(-1, index).squeeze(-1), entropy, (log_p, p, entropy, index)


def _categorical_terms_grad(cache: tuple, coef_log_prob: torch.Tensor, coef_entropy: torch.Tensor) -> torch.Tensor:
    # d log p_a / d z = onehot(a) - p;  d H / d z = -p * (log p + H)
    log_p, p, entropy, index = cache
    grad = p * (-coef_log_prob - coef_entropy * entropy).unsqueeze(-1) - coef_entropy.unsqueeze(-1) * p * log_p
    return grad.scatter_add_(-1, index, coef_log_prob.unsqueeze(-1))


def terms(head: ActionHead, out: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """``(log_prob [M], entropy [M], cache)`` of ``actions`` under ``out [M, P]``."""
    if isinstance(head, CategoricalHead):
        return _categorical_terms(out, actions)
    if isinstance(head, MultiCategoricalHead):
        actions = actions.reshape(*out.shape[:-1], -1)  # [.., M, dims]
        parts = [_categorical_terms(logits, actions[..., i]) for i, logits in enumerate(head.split(out))]
        return sum(p[0] for p in parts), sum(p[1] for p in parts), tuple(p[2] for p in parts)  # type: ignore[return-value]
    if isinstance(head, DiagGaussianHead):
        mean, log_std = head.split(out)
        inv_std = torch.exp(-log_std)
        z = (actions - mean) * inv_std
        log_prob = (-0.5 * z.square() - log_std - 0.5 * LOG_2PI).sum(-1)
        entropy = (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)
        return log_prob, entropy, (z, inv_std)
    raise TypeError(f"no analytic gradient for {type(head).__name__}")


def terms_grad(head: ActionHead, cache: tuple, coef_log_prob: torch.Tensor, coef_entropy: torch.Tensor) -> torch.Tensor:
    """``coef_log_prob * d log_prob / d out + coef_entropy * d entropy / d out``, ``[M, P]``."""
    if isinstance(head, CategoricalHead):
        return _categorical_terms_grad(cache, coef_log_prob, coef_entropy)
    if isinstance(head, MultiCategoricalHead):
        return torch.cat([_categorical_terms_grad(part, coef_log_prob, coef_entropy) for part in cache], dim=-1)
    # Gaussian: d log p / d mean = z / std;  d log p / d log_std = z^2 - 1;  d H / d log_std = 1
    z, inv_std = cache
    c = coef_log_prob.unsqueeze(-1)
    return torch.cat([c * z * inv_std, c * (z.square() - 1) + coef_entropy.unsqueeze(-1)], dim=-1)
