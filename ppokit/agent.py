"""The Agent: observation normalizer -> encoder -> actor and critic heads, in one nn.Module.

Everything needed to act is inside the module (weights and normalizer buffers), so a saved
agent acts exactly like the trained one with no other file.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.config import EnvConfig, ModelConfig
from ppokit.distributions import ActionHead, DiagGaussianHead, head_for
from ppokit.networks import encoder_for, is_image_space, layer_init, mlp
from ppokit.normalize import RunningMeanStd


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

        self.actor_trunk = trunk()
        self.critic_trunk = None if self.shared_trunk else trunk()
        self.policy_head = head(n_out, 0.01)
        self.value_head = head(1, 1.0)
        self.log_std = (
            nn.Parameter(torch.full((n_out,), float(model.log_std_init))) if self.gaussian else None
        )

    # ------------------------------------------------------------------ tensors in, tensors out

    def preprocess(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations ``[B, *obs]`` -> network input (normalized when enabled)."""
        return self.obs_normalizer.normalize(obs) if self.obs_normalizer is not None else obs

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocess(obs)
        actor_features = self.actor_trunk(x)
        critic_features = actor_features if self.critic_trunk is None else self.critic_trunk(x)
        policy_out = self.policy_head(actor_features)
        if self.log_std is not None:
            policy_out = torch.cat([policy_out, self.log_std.expand_as(policy_out)], dim=-1)
        return policy_out, self.value_head(critic_features).squeeze(-1)

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
        from ppokit import checkpoint
        from ppokit.config import Config

        cfg = self.config if self.config is not None else Config()
        checkpoint.save_agent(path, self, cfg, self.global_step)
