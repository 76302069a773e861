"""Export a trained policy for deployment: raw observations in, env actions out, in one file.

:class:`DeployedPolicy` wraps an :class:`~ppokit.agent.Agent` into the whole deterministic
policy: observation normalization (the saved running statistics, with their clipping), the actor
network, and the action post-processing: argmax (+ the space's ``start``) for Discrete and
MultiDiscrete / MultiBinary, the mean clipped to the bounds for Box. :func:`export` writes it as
ONNX (run by onnxruntime, no torch or ppokit needed) or as a ``torch.export`` program (``.pt2``,
``torch.export.load(path).module()``; TorchScript is deprecated in torch 2.13, so not offered).
docs/export.md has a deployment example.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.config import check_output_file
from ppokit.distributions import CategoricalHead, DiagGaussianHead, MultiCategoricalHead
from ppokit.errors import ConfigError, quote
from ppokit.extras import require
from ppokit.networks import ImageEncoder

if TYPE_CHECKING:
    from ppokit.agent import Agent

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}
OPSET = 17
INPUT, OUTPUT = "observation", "action"


class DeployedPolicy(nn.Module):
    """``forward(obs [B, *obs]) -> actions [B, *action]``, what ``agent.act(obs, deterministic=True)``
    returns for a batch: int64 for discrete spaces, float32 clipped to the bounds for Box."""

    low: torch.Tensor  # [A] Box bounds, flattened
    high: torch.Tensor
    start: torch.Tensor  # [1] or [K]: the discrete spaces' first action

    def __init__(self, agent: Agent):
        super().__init__()
        if any(isinstance(module, ImageEncoder) and module.in_bfloat16 for module in agent.modules()):
            agent = float32_copy(agent)
        self.agent = agent
        self.head = agent.head
        space = agent.action_space
        self.action_shape = tuple(space.shape or ())
        if isinstance(self.head, DiagGaussianHead):
            self.register_buffer("low", torch.as_tensor(self.head.low))
            self.register_buffer("high", torch.as_tensor(self.head.high))
        start = getattr(self.head, "start", None)
        self.register_buffer("start", torch.as_tensor(np.asarray(start if start is not None else 0), dtype=torch.int64)
                             .reshape(-1))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.agent.policy(obs)  # [B, P]: normalization, encoder, actor MLP, policy head
        batch = out.shape[0]
        if isinstance(self.head, DiagGaussianHead):
            mean = out[:, : self.head.action_dim]  # the mode of the Gaussian
            return torch.minimum(torch.maximum(mean, self.low), self.high).reshape(batch, *self.action_shape)
        if isinstance(self.head, CategoricalHead):
            return out.argmax(-1) + self.start
        if isinstance(self.head, MultiCategoricalHead):
            actions = torch.stack([logits.argmax(-1) for logits in self.head.split(out)], dim=-1)
            return (actions + self.start).reshape(batch, *self.action_shape)
        raise ConfigError(f"export: unsupported action head {type(self.head).__name__}")  # pragma: no cover


def float32_copy(agent: Agent) -> Agent:
    """A copy of ``agent`` whose CNNs compute in float32 (``model.cnn_dtype: bfloat16`` trains and acts
    in bfloat16; an exported file computes in float32, which every runtime has)."""
    agent = copy.deepcopy(agent)
    for module in agent.modules():
        if isinstance(module, ImageEncoder):
            module.in_bfloat16 = False
    return agent


def example_observations(space: gym.Space, batch: int = 2) -> torch.Tensor:
    """``[batch, *obs]`` observations in the dtype the env gives (what the exported file takes)."""
    sample = np.stack([space.sample() for _ in range(batch)])
    return torch.as_tensor(sample)


def default_out(path: str | Path, fmt: str) -> Path:
    """``RUN/policy.onnx`` for a run folder, ``CHECKPOINT.onnx`` beside a checkpoint folder."""
    path = Path(path)
    return path / f"policy{FORMATS[fmt]}" if (path / "checkpoints").is_dir() else path.with_suffix(FORMATS[fmt])


def export(agent: Agent, out: str | Path, fmt: str = "onnx") -> Path:
    """Write ``agent``'s deterministic policy to ``out`` as ``fmt`` (onnx | pt2); the batch axis is dynamic."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {quote(fmt)}: expected one of {', '.join(FORMATS)}")
    out = check_output_file(out, (FORMATS[fmt],))
    policy = DeployedPolicy(agent.cpu()).eval()
    example = example_observations(agent.observation_space)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' deprecation notes are not the user's business
            if fmt == "onnx":
                require("onnx", "export", "export to ONNX")
                torch.onnx.export(policy, (example,), str(tmp), input_names=[INPUT], output_names=[OUTPUT],
                                  dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=OPSET,
                                  dynamo=False)
            else:
                batch = {"obs": {0: torch.export.Dim("batch")}}
                program = torch.export.export(policy, (example,), dynamic_shapes=batch)
                torch.export.save(program, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
