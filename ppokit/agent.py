"""The Agent: observation normalizer -> encoder -> actor and critic heads, in one nn.Module.

Everything needed to act is inside the module (weights and normalizer buffers), so a saved
agent acts exactly like the trained one with no other file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit import checkpoint
from ppokit.config import Config, EnvConfig, ModelConfig
from ppokit.distributions import ActionHead, DiagGaussianHead, head_for
from ppokit.errors import CheckpointError, ConfigError, quote
from ppokit.memory import check_fits
from ppokit.networks import encoder_for, layer_init, mlp
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
        networks: dict[str, nn.Module] | None = None,
        separate_critic: bool = False,
    ):
        """``separate_critic``: the algorithm fits the critic apart from the policy
        (:meth:`~ppokit.config.BaseConfig.fits_critic_apart`); image agents then get a second CNN
        for the critic, otherwise they share one trunk (``model.shared_trunk`` or not)."""
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
        # The learner's reward (r + shift) * scale (env.reward_shift, env.reward_scale): plain
        # numbers of the config, applied before the return normalizer (ppokit.rollout).
        self.reward_shift, self.reward_scale = float(env.reward_shift), float(env.reward_scale)
        self.shared_trunk = model.shared_trunk or (image and not separate_critic)
        self.gaussian = isinstance(self.head, DiagGaussianHead)
        n_out = self.head.action_dim if self.gaussian else self.head.num_outputs
        networks = check_networks(networks, self.shared_trunk)
        if not image and not model.hidden_sizes:
            raise ConfigError("model.hidden_sizes: [] (no layers: the heads read the encoder's features) is for image "
                              "observations, whose CNN ends in a hidden layer; give at least one layer, e.g. [64, 64]")
        self.custom_networks = {name: type(module).__qualname__ for name, module in networks.items()}

        def trunk(role: str, sizes: list[int] | None) -> nn.Sequential:
            """``[B, *obs] -> [B, H]``: the encoder, then the configured MLP or the user's module."""
            encoder = networks.get("encoder") or encoder_for(observation_space, model.encoder, model.cnn_dtype)
            if role == "critic" and "encoder" in networks:
                encoder = copy.deepcopy(encoder)  # separate networks: the critic gets its own copy
            encoder_dim = output_size(encoder, sample_observations(observation_space))
            body = networks.get(role) or mlp(encoder_dim, list(sizes or model.hidden_sizes), model.activation,
                                              model.ortho_init)
            return nn.Sequential(encoder, body)

        def head(trunk: nn.Sequential, size: int, std: float) -> nn.Module:
            linear = nn.Linear(output_size(trunk, sample_observations(observation_space)), size)
            return layer_init(linear, std) if model.ortho_init else linear

        self.actor_trunk = trunk("actor", model.actor_hidden_sizes)
        self.policy_head = head(self.actor_trunk, n_out, 0.01)
        sigma_options = model.state_dependent_std or model.log_std_min is not None or model.log_std_max is not None
        if sigma_options and not self.gaussian:
            raise ConfigError(f"model.state_dependent_std, model.log_std_min and model.log_std_max are for Box actions "
                              f"(a Gaussian policy); this env's actions are {action_space}: unset them")
        # Gaussians: the log-std [A], one free parameter per action dimension, or (state_dependent_std)
        # a linear head on the actor's features [B, H] -> [B, A] whose bias starts at log_std_init.
        self.log_std = (
            nn.Parameter(torch.full((n_out,), float(model.log_std_init)))
            if self.gaussian and not model.state_dependent_std else None
        )
        self.log_std_head = head(self.actor_trunk, n_out, 0.01) if model.state_dependent_std else None
        if self.log_std_head is not None:
            nn.init.constant_(self.log_std_head.bias, float(model.log_std_init))
        self.log_std_bounds = (model.log_std_min, model.log_std_max)  # clamp (None: that side open)
        self.critic_trunk = None if self.shared_trunk else trunk("critic", model.critic_hidden_sizes)
        self.value_head = head(self.critic_trunk or self.actor_trunk, 1, 1.0)
        # Acting runs the whole network when the critic is one linear layer on the CNN features the
        # actor computes anyway (ppokit.rollout); an MLP agent acts with the actor alone, and its
        # values come from one pass over the whole rollout, cheaper than a call per step.
        self.acts_with_critic = image and self.critic_trunk is None

    # ------------------------------------------------------------------ tensors in, tensors out

    def preprocess(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations ``[B, *obs]`` -> network input (normalized when enabled)."""
        return self.obs_normalizer.normalize(obs) if self.obs_normalizer is not None else obs

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocess(obs)
        actor_features = self.actor_trunk(x)
        critic_features = actor_features if self.critic_trunk is None else self.critic_trunk(x)
        return self.policy_out(actor_features), self.value_head(critic_features).squeeze(-1)

    def policy(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor alone: ``obs [B, *obs] -> policy_out [B, P]`` (what acting needs, every step)."""
        return self.policy_out(self.actor_features(obs))

    def actor_features(self, obs: torch.Tensor,
                       moments: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``obs [B, *obs] -> [B, H]``: normalizer, encoder, actor MLP. ``moments``: the normalizer's
        :meth:`~ppokit.normalize.RunningMeanStd.float32_moments`, when computed earlier."""
        x = self.obs_normalizer.normalize(obs, moments) if self.obs_normalizer is not None else obs
        encoder, body = self.actor_trunk[0], self.actor_trunk[1]
        return body.forward(encoder.forward(x))  # .forward: no hooks

    def rollout_sampler(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``obs [N, *obs] -> sampled action [N, ...]`` for a rollout of an agent that acts with the
        actor alone, valid while the weights and the normalizer's statistics stay as they are now.

        The numbers and random draws of ``head.sample(policy(obs))``, with what does not depend on
        the observation computed once: the normalizer's float32 mean and std and, for a Gaussian
        with a free log-std, its std (one env's acting is a 1-row forward per step, where each of
        those operations costs as much as a layer)."""
        moments = self.obs_normalizer.float32_moments() if self.obs_normalizer is not None else None
        if not (self.gaussian and self.log_std_head is None):
            return lambda obs: self.head.sample(self.policy_out(self.actor_features(obs, moments)))
        std = torch.exp(self.clamped_log_std(self.log_std))  # [A]
        weight, bias = self.policy_head.weight, self.policy_head.bias
        return lambda obs: DiagGaussianHead.sample_around(
            torch.addmm(bias, self.actor_features(obs, moments), weight.t()), std)

    def clamped_log_std(self, log_std: torch.Tensor) -> torch.Tensor:
        """``log_std`` within ``model.log_std_min`` / ``log_std_max`` where they are set."""
        low, high = self.log_std_bounds
        return torch.clamp(log_std, low, high) if low is not None or high is not None else log_std

    def policy_out(self, actor_features: torch.Tensor) -> torch.Tensor:
        """The policy head on ``[B, H]`` features (with the log-std for Gaussians): ``[B, P]``."""
        policy_out = torch.addmm(self.policy_head.bias, actor_features, self.policy_head.weight.t())
        if self.gaussian:  # [B, A] means, then [B, A] log-stds
            log_std = (self.log_std.expand_as(policy_out) if self.log_std_head is None
                       else self.log_std_head(actor_features))
            policy_out = torch.cat([policy_out, self.clamped_log_std(log_std)], dim=-1)
        return policy_out

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
        policy_out = self.policy(batch)  # the actor alone: acting needs no value
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


NETWORK_ROLES = ("encoder", "actor", "critic")


def check_networks(networks: dict[str, nn.Module] | None, shared_trunk: bool) -> dict[str, nn.Module]:
    """The user's custom modules by role, checked: ``encoder`` (``[B, *obs] -> [B, D]``), ``actor``
    and ``critic`` (``[B, D] -> [B, H]``, replacing the MLP). They train on the autograd path."""
    networks = dict(networks or {})
    for name, module in networks.items():
        if name not in NETWORK_ROLES:
            raise ConfigError(f"networks: unknown role {quote(name)} (accepted: {', '.join(NETWORK_ROLES)})")
        if not isinstance(module, nn.Module):
            raise ConfigError(f"networks[{name!r}]: expected a torch.nn.Module, got {type(module).__name__}")
    if shared_trunk and "critic" in networks:
        raise ConfigError("networks['critic']: this agent shares one trunk between actor and critic "
                          "(model.shared_trunk or image observations); give networks['actor'] only")
    return networks


def sample_observations(space: gym.Space) -> torch.Tensor:
    """Two observations ``[2, *obs]`` in the space's dtype (to find a module's output size): zeros, or a
    Discrete space's first value (``Discrete(5, start=10)`` observes 10..14)."""
    if isinstance(space, gym.spaces.Discrete):
        return torch.full((2,), int(space.start), dtype=torch.int64)
    dtype = torch.uint8 if space.dtype == np.uint8 else torch.float32
    return torch.zeros((2, *space.shape), dtype=dtype)


@torch.no_grad()
def output_size(module: nn.Module, inputs: torch.Tensor) -> int:
    """The feature size ``H`` of ``module`` on ``inputs`` (its output must be ``[B, H]``).

    Read from ``out_dim`` (of a Sequential: of its last module) where the module has one, without
    a forward: on the ``meta`` device (:func:`shape_only`) a forward can import torch._dynamo (1-2 s)."""
    last = module[-1] if isinstance(module, nn.Sequential) and len(module) > 0 else module
    out_dim = getattr(last, "out_dim", None)
    if isinstance(out_dim, int):
        return out_dim
    outputs = module(inputs)
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
        shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise ConfigError(f"networks: {type(module).__name__} must return a [batch, features] tensor, got {shape}")
    return int(outputs.shape[1])


def shape_only(observation_space: gym.Space, action_space: gym.Space, model: ModelConfig, env: EnvConfig,
               networks: dict[str, nn.Module] | None = None, separate_critic: bool = False) -> Agent | None:
    """The agent these arguments would build, on the ``meta`` device: every tensor has its shape
    and dtype but no memory, so a config's size can be checked before it is allocated. None with
    custom ``networks`` (the user's modules live on a real device)."""
    if networks:
        return None
    with torch.device("meta"):
        return Agent(observation_space, action_space, model, env, separate_critic=separate_critic)


def state_problem(agent: Agent) -> str | None:
    """Why the agent's (loaded) state cannot be one that training produced, or None: a NaN or
    infinity in any tensor (also one that overflowed on the way into float32), or normalizer
    statistics no data can give."""
    for name, value in agent.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"tensor {quote(name)} holds NaN or infinity"
    for name in ("obs_normalizer", "return_normalizer"):
        normalizer = getattr(agent, name)
        if normalizer is not None and (problem := normalizer.problem()) is not None:
            return f"{name} {problem}"
    return None


def load_agent(path: str | Path, device: str | torch.device = "cpu", networks: dict[str, nn.Module] | None = None):
    """The :class:`~ppokit.agent.Agent` saved at ``path`` (run folder or checkpoint folder).

    The agent's shapes are checked against the safetensors header (from an agent built on the
    ``meta`` device) and its size against the memory available before anything is allocated; the
    loaded values must be finite and plausible (:func:`state_problem`). An agent trained with
    custom ``networks`` needs the same modules again (their weights are in the checkpoint, their
    code is not)."""
    opened = checkpoint.open_checkpoint(path)
    meta, folder = opened.meta, opened.folder
    cfg = checkpoint.config_of(meta, folder)
    custom = meta.get("networks") or {}
    if not isinstance(custom, dict) or set(custom) != set(networks or {}):
        expected = quote(", ".join(f"{role}={name}(...)" for role, name in custom.items())) if isinstance(
            custom, dict) else "?"
        raise CheckpointError(
            f"checkpoint {quote(folder)} was trained with custom networks ({expected}): pass the same modules, "
            "e.g. ppokit.load(path, networks={...})" if custom else
            f"checkpoint {quote(folder)} has no custom networks; load it without networks="
        )
    try:
        observation_space = space_from_json(meta["observation_space"])
        action_space = space_from_json(meta["action_space"])
    except Exception as error:  # noqa: BLE001  (any malformed description)
        raise CheckpointError(f"checkpoint {quote(folder)}: bad space description ({type(error).__name__}: "
                              f"{error})") from None
    check_spaces(meta["env_id"], observation_space, action_space)
    try:
        separate = cfg.fits_critic_apart()
        skeleton = shape_only(observation_space, action_space, cfg.model, cfg.env, networks, separate)
        agent = None
        if skeleton is not None:
            expected = {name: checkpoint.tensor_info(t) for name, t in skeleton.state_dict().items()}
            checkpoint.check_header(folder, opened.header, expected, "agent.")
            check_fits(2 * sum(t.numel() * t.element_size() for t in skeleton.state_dict().values()),
                       f"checkpoint {quote(folder)}: its agent")
        agent = Agent(observation_space, action_space, cfg.model, cfg.env, networks, separate)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {quote(folder)}: cannot build its agent ({type(error).__name__}: "
                              f"{error})") from None
    finally:
        if agent is None:
            opened.model.close()
    tensors = opened.load()
    state = {k[len("agent."):]: v for k, v in tensors.items() if k.startswith("agent.")}
    try:
        agent.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {quote(folder)}: weights do not match its config ({str(error).splitlines()[0]})"
        ) from None
    problem = state_problem(agent)
    if problem is not None:
        raise CheckpointError(f"checkpoint {quote(folder)}: {problem}")
    agent.config = cfg
    agent.global_step = meta.get("global_step", 0)
    return agent.to(device), tensors, meta
