"""Network building blocks: orthogonal init, MLPs, the Nature CNN, and an encoder per obs space."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        self.out_dim = in_dim  # the feature size H of the output [B, H]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.act(nn.functional.linear(x, layer.weight, layer.bias))
        return x


def mlp(in_dim: int, hidden_sizes: list[int], activation: str, ortho_init: bool = True) -> MLP:
    """``in_dim -> hidden_sizes[0] -> ... -> hidden_sizes[-1]``, activation after every layer."""
    return MLP(in_dim, hidden_sizes, activation, ortho_init)


@dataclass(frozen=True)
class ImageLayout:
    """Where the axes of an image observation are: ``(H, W, C)`` or ``(C, H, W)`` frames, or ``(K, H, W, C)``
    (K stacked HWC frames, e.g. FrameStackObservation of colour frames), seen by the CNN as ``C * K`` channels.

    The channel axis of a rank-3 shape is the smaller of its first and last (``(84, 84, 3)`` is HWC,
    ``(4, 84, 84)`` CHW); a tie is HWC, gymnasium's convention for rendered frames."""

    channels: int
    height: int
    width: int
    channels_last: bool
    stacked: bool  # rank 4: (K, H, W, C)

    @classmethod
    def of(cls, shape: tuple[int, ...]) -> ImageLayout:
        if len(shape) == 4:
            k, h, w, c = shape
            return cls(k * c, h, w, True, True)
        channels_last = shape[-1] <= shape[0]
        if channels_last:
            return cls(shape[2], shape[0], shape[1], True, False)
        return cls(shape[0], shape[1], shape[2], False, False)

    def to_nchw(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 observations ``[B, *obs]`` -> float32 ``[B, C, H, W]`` in [0, 1] (scaled here, so
        that they stay uint8 in the rollout's storage), laid out channels-last in memory.

        The division converts and scales in one pass (the same values as ``obs.float() / 255``).
        Channels-last memory (a no-op for HWC frames, whose permuted view already is) lets the CPU's
        convolutions take their faster NHWC kernels: the Nature CNN's forward and backward on 256
        stacked Atari frames cost about 20% less CPU time than with CHW memory (docs/atari.md)."""
        x = torch.div(obs, 255.0) if obs.dtype == torch.uint8 else obs.to(torch.float32) / 255.0
        if self.stacked:  # [B, K, H, W, C] -> [B, K, C, H, W] -> [B, K*C, H, W]
            x = x.permute(0, 1, 4, 2, 3).reshape(x.shape[0], self.channels, self.height, self.width)
        elif self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return x.contiguous(memory_format=torch.channels_last)


class ImageEncoder(nn.Module):
    """A CNN on uint8 images: ``[B, *obs]`` (any :class:`ImageLayout`) -> ``[B, out_dim]`` float32 features.

    Subclasses give ``conv`` (``[B, C, H, W] -> [B, F]`` after its Flatten) and the size of the
    fully connected layer after it; ``MIN_SIZE`` is the smallest height and width they take.

    ``in_bfloat16`` (``model.cnn_dtype: bfloat16``): the convolutions and the fully connected layer
    compute in bfloat16 under ``torch.autocast`` (weights and gradients stay float32; the features
    come out as float32 for the heads). Faster where the CPU has bfloat16 instructions: the update
    of a Pong run took 1.37x less time on a Zen 4 EPYC (docs/atari.md), at bfloat16's 8-bit mantissa."""

    MIN_SIZE = 1
    NAME = ""  # its model.encoder value
    FEATURES = 512

    def __init__(self, obs_shape: tuple[int, ...], dtype: str = "float32"):
        super().__init__()
        self.in_bfloat16 = dtype == "bfloat16"
        self.layout = ImageLayout.of(tuple(obs_shape))
        size = min(self.layout.height, self.layout.width)
        if size < self.MIN_SIZE:
            raise ConfigError(
                f"image observations of {self.layout.height}x{self.layout.width} pixels (shape {tuple(obs_shape)}) are "
                f"too small for model.encoder={self.NAME}, which needs at least {self.MIN_SIZE}x{self.MIN_SIZE}: "
                "use model.encoder=small (or auto), or resize them larger "
                "(pixels.size, with pixels.preprocess=image or atari)"
            )
        self.conv = self.convolutions(self.layout.channels)
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, self.layout.channels, self.layout.height, self.layout.width)).shape[1]
        self.fc = nn.Sequential(layer_init(nn.Linear(n_flat, self.FEATURES)), nn.ReLU())
        self.out_dim = self.FEATURES

    def convolutions(self, channels: int) -> nn.Sequential:
        raise NotImplementedError

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.layout.to_nchw(obs)
        if not self.in_bfloat16 or x.device.type == "meta":  # meta: shapes only (ppokit.agent.shape_only)
            return self.fc(self.conv(x))
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            features = self.fc(self.conv(x))
        return features.float()


class NatureCNN(ImageEncoder):
    """The DQN Nature CNN (Mnih et al. 2015), as in the PPO paper's Atari runs: 32 8x8/4, 64 4x4/2,
    64 3x3/1, then 512 units. ``[B, *obs]`` uint8 -> ``[B, 512]``."""

    MIN_SIZE = 36  # the smallest height and width its three convolutions (8/4, 4/2, 3/1) accept
    NAME = "nature"

    def convolutions(self, channels: int) -> nn.Sequential:
        return nn.Sequential(
            layer_init(nn.Conv2d(channels, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
        )


class SmallCNN(ImageEncoder):
    """For small frames (any size; ``auto`` picks it below 36x36): 16 3x3/1 and 32 3x3/2, both
    padded, then 256 units. ``[B, *obs]`` uint8 -> ``[B, 256]``."""

    NAME = "small"
    FEATURES = 256

    def convolutions(self, channels: int) -> nn.Sequential:
        return nn.Sequential(
            layer_init(nn.Conv2d(channels, 16, 3, stride=1, padding=1)), nn.ReLU(),
            layer_init(nn.Conv2d(16, 32, 3, stride=2, padding=1)), nn.ReLU(),
            nn.Flatten(),
        )


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


IMAGE_ENCODERS = {"nature": NatureCNN, "small": SmallCNN}


def encoder_for(space: gym.Space, kind: str = "auto", cnn_dtype: str = "float32") -> nn.Module:
    """The observation encoder for a space (``kind``: the config's ``model.encoder``, for images:
    ``auto`` is the Nature CNN from 36x36 pixels up and the small CNN below, computing in
    ``cnn_dtype``); has ``out_dim``."""
    if is_image_space(space):
        if kind == "auto":
            layout = ImageLayout.of(space.shape)
            kind = "nature" if min(layout.height, layout.width) >= NatureCNN.MIN_SIZE else "small"
        return IMAGE_ENCODERS[kind](space.shape, cnn_dtype)
    if isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
        return FlattenEncoder(space)
    raise ValueError(f"unsupported observation space {space}")
