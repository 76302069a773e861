"""Network building blocks: orthogonal init, MLPs, the Nature CNN, and an encoder per obs space."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.errors import ConfigError
from ppokit.spaces import is_image_space

# The same as functions: no module call per layer (that overhead is most of a small forward).
FUNCTIONS = {"tanh": torch.tanh, "relu": torch.relu, "elu": nn.functional.elu, "gelu": nn.functional.gelu}


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights with gain ``std`` and constant bias (the PPO implementation-detail init)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class MLP(nn.Module):
    """Linear layers with an activation after each: ``[B, in_dim] -> [B, hidden_sizes[-1]]``.

    For tanh and ReLU, :mod:`ppokit.fast.network` has its hand-written backward (the fast update path).
    """

    def __init__(self, in_dim: int, hidden_sizes: list[int], activation: str, ortho_init: bool = True):
        super().__init__()
        self.activation = activation
        self.layers = nn.ModuleList()
        for size in hidden_sizes:
            linear = nn.Linear(in_dim, size)
            self.layers.append(layer_init(linear) if ortho_init else linear)
            in_dim = size
        self.act = FUNCTIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.act(nn.functional.linear(x, layer.weight, layer.bias))
        return x


def mlp(in_dim: int, hidden_sizes: list[int], activation: str, ortho_init: bool = True) -> MLP:
    """``in_dim -> hidden_sizes[0] -> ... -> hidden_sizes[-1]``, activation after every layer."""
    return MLP(in_dim, hidden_sizes, activation, ortho_init)


class NatureCNN(nn.Module):
    """The DQN Nature CNN: ``[B, H, W, C]`` or ``[B, C, H, W]`` uint8 -> ``[B, 512]`` features."""

    MIN_SIZE = 36  # the smallest height and width its three convolutions (8/4, 4/2, 3/1) accept

    def __init__(self, obs_shape: tuple[int, ...]):
        super().__init__()
        self.channels_last = obs_shape[-1] < obs_shape[0]
        channels = obs_shape[-1] if self.channels_last else obs_shape[0]
        height, width = self._chw(obs_shape)[1:]
        if min(height, width) < self.MIN_SIZE:
            raise ConfigError(
                f"image observations of {height}x{width} pixels (shape {tuple(obs_shape)}) are too small for ppokit's "
                f"CNN, which needs at least {self.MIN_SIZE}x{self.MIN_SIZE}: resize them with a wrapper "
                "(gymnasium.wrappers.ResizeObservation) or pass your own encoder (networks={'encoder': ...})"
            )
        self.conv = nn.Sequential(
            layer_init(nn.Conv2d(channels, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, *self._chw(obs_shape))).shape[1]
        self.fc = nn.Sequential(layer_init(nn.Linear(n_flat, 512)), nn.ReLU())
        self.out_dim = 512

    def _chw(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[2], shape[0], shape[1]) if self.channels_last else tuple(shape)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.to(torch.float32) / 255.0
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return self.fc(self.conv(x))


class FlattenEncoder(nn.Module):
    """Box or Discrete observations -> ``[B, D]`` float32 (Discrete becomes one-hot)."""

    def __init__(self, space: gym.Space):
        super().__init__()
        self.one_hot = int(space.n) if isinstance(space, gym.spaces.Discrete) else None
        self.start = int(space.start) if isinstance(space, gym.spaces.Discrete) else 0  # Discrete(5, start=10): 10..14
        self.out_dim = int(self.one_hot or np.prod(space.shape))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.one_hot is not None:
            return nn.functional.one_hot(obs.long().reshape(-1) - self.start, self.one_hot).to(torch.float32)
        return obs.reshape(obs.shape[0], -1).to(torch.float32)


def encoder_for(space: gym.Space) -> nn.Module:
    """The observation encoder for a space; has an ``out_dim`` attribute."""
    if is_image_space(space):
        return NatureCNN(space.shape)
    if isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
        return FlattenEncoder(space)
    raise ValueError(f"unsupported observation space {space}")
