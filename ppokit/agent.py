"""The Agent: observation normalizer -> encoder -> actor and critic heads, in one nn.Module.

Everything needed to act is inside the module (weights and normalizer buffers), so a saved
agent acts exactly like the trained one with no other file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit import checkpoint
from ppokit.config import Config, EnvConfig, ModelConfig
from ppokit.distributions import ActionHead, DiagGaussianHead, head_for
from ppokit.errors import CheckpointError, quote
from ppokit.networks import FlattenEncoder, encoder_for, layer_init, matmul_into, mlp, sum_rows_into
from ppokit.normalize import RunningMeanStd
from ppokit.spaces import check_spaces, is_image_space, space_from_json


class Agent(nn.Module):
    """Actor-critic. ``forward(obs [B, *obs]) -> (policy_out [B, P], value [B])``.

    ``policy_out`` is what the action head reads (logits, or mean and log-std); see
    :mod:`ppokit.distributions`.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model: ModelConfig | None = None,
        env: EnvConfig | None = None,
    ):
        super().__init__()
        self.config: Any = None  # the training Config, set by train() and load()
        self.global_step = 0
        self.run_dir: Path | None = None  # the run folder, when ppokit.train made this agent
        self.summary: dict[str, Any] | None = None  # that run's summary.json
        self.env_source: Any = None  # the env factory / wrappers ppokit.train was given (not saved)
        model = model or ModelConfig()
        env = env or EnvConfig()
        self.observation_space = observation_space
        self.action_space = action_space
        self.head: ActionHead = head_for(action_space)
        image = is_image_space(observation_space)
        self.obs_normalizer = (
            RunningMeanStd(observation_space.shape, clip=env.clip_obs)
            if env.normalize_obs and not image and isinstance(observation_space, gym.spaces.Box)
            else None
        )
        # Reward scaling statistics (running variance of the discounted return). Not used to act,
        # but part of the agent so that training resumes with them and they are saved together.
        self.return_normalizer = (
            RunningMeanStd((), clip=env.clip_reward) if env.normalize_reward else None
        )
        self.shared_trunk = model.shared_trunk or image
        self.gaussian = isinstance(self.head, DiagGaussianHead)
        hidden = list(model.hidden_sizes)
        n_out = self.head.action_dim if self.gaussian else self.head.num_outputs

        def trunk() -> nn.Sequential:
            encoder = encoder_for(observation_space)
            return nn.Sequential(encoder, mlp(encoder.out_dim, hidden, model.activation, model.ortho_init))

        def head(size: int, std: float) -> nn.Module:
            linear = nn.Linear(hidden[-1], size)
            return layer_init(linear, std) if model.ortho_init else linear

        # Registration order = order in the flat parameter buffer: actor parameters first, then the
        # critic's, so that each is one contiguous slice (see flat_parameters).
        self.actor_trunk = trunk()
        self.policy_head = head(n_out, 0.01)
        self.log_std = (
            nn.Parameter(torch.full((n_out,), float(model.log_std_init))) if self.gaussian else None
        )
        self.critic_trunk = None if self.shared_trunk else trunk()
        self.value_head = head(1, 1.0)
        self._flat: torch.Tensor | None = None

    # ------------------------------------------------------------------ tensors in, tensors out

    def preprocess(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations ``[B, *obs]`` -> network input (normalized when enabled)."""
        return self.obs_normalizer.normalize(obs) if self.obs_normalizer is not None else obs

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocess(obs)
        actor_features = self.actor_trunk(x)
        critic_features = actor_features if self.critic_trunk is None else self.critic_trunk(x)
        return self._policy_out(actor_features), self.value_head(critic_features).squeeze(-1)

    def policy(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor alone: ``obs [B, *obs] -> policy_out [B, P]`` (what acting needs, every step)."""
        encoder, body = self.actor_trunk[0], self.actor_trunk[1]
        return self._policy_out(body.forward(encoder.forward(self.preprocess(obs))))  # .forward: no hooks

    def _policy_out(self, actor_features: torch.Tensor) -> torch.Tensor:
        """The policy head on ``[B, H]`` features (with the log-std for Gaussians): ``[B, P]``."""
        policy_out = torch.addmm(self.policy_head.bias, actor_features, self.policy_head.weight.t())
        if self.log_std is not None:
            policy_out = torch.cat([policy_out, self.log_std.expand_as(policy_out)], dim=-1)
        return policy_out

    def flat_parameters(self) -> tuple[torch.Tensor, dict[str, tuple[int, int]]]:
        """One buffer ``[P]`` that every parameter is a view of, and each name's ``(start, end)``.

        Made on first use and again whenever the parameters stopped being views of it (after
        ``.to(device)`` or a deep copy). Lets clipping and Adam run as a few vector operations.
        """
        named = list(self.named_parameters())
        offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, p in named:
            offsets[name] = (start, start + p.numel())
            start += p.numel()
        flat = self._flat
        is_view = flat is not None and flat.device == named[0][1].device and all(
            p.data_ptr() == flat[offsets[n][0]:].data_ptr() and p.is_contiguous() for n, p in named
        )
        if not is_view:
            flat = torch.cat([p.detach().reshape(-1) for _, p in named])
            for name, p in named:
                a, b = offsets[name]
                p.data = flat[a:b].view_as(p)
            self._flat = flat
        assert flat is not None
        return flat, offsets

    # ------------------------------------------------------------------ hand-written backward

    @property
    def manual_backward(self) -> bool:
        """True when :meth:`forward_cached`/:meth:`backward_cached` apply (MLP trunks, tanh/ReLU)."""
        trunks = [self.actor_trunk] + ([self.critic_trunk] if self.critic_trunk is not None else [])
        return all(isinstance(t[0], FlattenEncoder) and t[1].manual_backward for t in trunks)

    @torch.no_grad()
    def forward_cached(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """Like ``forward`` (no autograd graph) plus the activations that ``backward_cached`` needs."""
        x = self.preprocess(obs)
        actor = self.actor_trunk[1].forward_cached(self.actor_trunk[0](x))
        critic = actor if self.critic_trunk is None else self.critic_trunk[1].forward_cached(self.critic_trunk[0](x))
        policy_out = self._policy_out(actor[-1])
        values = torch.addmm(self.value_head.bias, critic[-1], self.value_head.weight.t()).squeeze(-1)
        return policy_out, values, (actor, critic)

    @torch.no_grad()
    def backward_cached(
        self, cache: tuple, grad_policy_out: torch.Tensor, grad_values: torch.Tensor,
        out: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Parameter gradients from ``dLoss/dpolicy_out [B, P]`` and ``dLoss/dvalues [B]``.

        ``out`` maps parameter names to tensors to write their gradients into (views of a
        flat buffer, which saves gathering them afterwards)."""
        actor, critic = cache
        out = out or {}
        grads: dict[str, torch.Tensor] = {}
        grad_mean = grad_policy_out
        if self.log_std is not None:
            action_dim = self.log_std.shape[0]
            grad_mean = grad_policy_out[:, :action_dim]
            grads["log_std"] = sum_rows_into(grad_policy_out[:, action_dim:], out.get("log_std"))
        grad_values = grad_values.unsqueeze(-1)
        grads["policy_head.weight"] = matmul_into(grad_mean.t(), actor[-1], out.get("policy_head.weight"))
        grads["policy_head.bias"] = sum_rows_into(grad_mean, out.get("policy_head.bias"))
        grads["value_head.weight"] = matmul_into(grad_values.t(), critic[-1], out.get("value_head.weight"))
        grads["value_head.bias"] = sum_rows_into(grad_values, out.get("value_head.bias"))
        grad_actor = torch.mm(grad_mean, self.policy_head.weight)
        grad_critic = torch.mm(grad_values, self.value_head.weight)
        if self.critic_trunk is None:
            trunks = [("actor_trunk", self.actor_trunk, actor, grad_actor + grad_critic)]
        else:
            trunks = [("actor_trunk", self.actor_trunk, actor, grad_actor),
                      ("critic_trunk", self.critic_trunk, critic, grad_critic)]
        for prefix, trunk, outputs, grad in trunks:
            names = trunk[1].parameter_names(f"{prefix}.1.")
            grads.update(zip(names, trunk[1].backward(outputs, grad, [out.get(name) for name in names])))
        return grads

    def dist(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        """The policy at ``obs [B, *obs]`` as a torch Distribution (log_prob/entropy are ``[B]``)."""
        return self.head.torch_dist(self(obs)[0])

    # ------------------------------------------------------------------ numpy API for users

    def _as_batch(self, obs: Any) -> tuple[torch.Tensor, bool]:
        array = np.asarray(obs)
        single_shape = self.observation_space.shape or ()
        single = array.shape == tuple(single_shape)
        if single:
            array = array[None]
        device = next(self.parameters()).device
        return torch.as_tensor(array, device=device), single

    @torch.no_grad()
    def act(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        """Action(s) for one observation or a batch, ready for ``env.step`` (Box actions clipped)."""
        batch, single = self._as_batch(obs)
        policy_out, _ = self(batch)
        actions = self.head.mode(policy_out) if deterministic else self.head.sample(policy_out)
        env_actions = self.head.to_env(actions.cpu().numpy())
        return env_actions[0] if single else env_actions

    @torch.no_grad()
    def value(self, obs: Any) -> np.ndarray | float:
        """The critic's estimate of the discounted return at one observation (float) or a batch."""
        batch, single = self._as_batch(obs)
        values = self(batch)[1].cpu().numpy()
        return float(values[0]) if single else values

    @property
    def env_id(self) -> str | None:
        return self.config.env_id if self.config is not None else None

    def save(self, path: str) -> None:
        """Write this agent as a checkpoint folder (``model.safetensors`` + ``meta.json``)."""
        cfg = self.config if self.config is not None else Config()
        checkpoint.save_agent(path, self, cfg, self.global_step)


def load_agent(path: str | Path, device: str | torch.device = "cpu"):
    """The :class:`~ppokit.agent.Agent` saved at ``path`` (run folder or checkpoint folder)."""
    tensors, meta, folder = checkpoint.read(path)
    cfg = checkpoint.config_of(meta, folder)
    try:
        observation_space = space_from_json(meta["observation_space"])
        action_space = space_from_json(meta["action_space"])
    except Exception as error:  # noqa: BLE001  (any malformed description)
        raise CheckpointError(f"checkpoint {quote(folder)}: bad space description ({type(error).__name__}: "
                              f"{error})") from None
    check_spaces(meta["env_id"], observation_space, action_space)
    try:
        agent = Agent(observation_space, action_space, cfg.model, cfg.env)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {quote(folder)}: cannot build its agent ({type(error).__name__}: "
                              f"{error})") from None
    state = {k[len("agent."):]: v for k, v in tensors.items() if k.startswith("agent.")}
    try:
        agent.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {quote(folder)}: weights do not match its config ({str(error).splitlines()[0]})"
        ) from None
    for name, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"checkpoint {quote(folder)}: tensor {quote(name)} holds NaN or infinity")
    agent.config = cfg
    try:
        agent.global_step = int(meta.get("global_step", 0))
    except (TypeError, ValueError):
        raise CheckpointError(f"checkpoint {quote(folder)}: global_step is not an integer") from None
    return agent.to(device), tensors, meta
