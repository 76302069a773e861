"""Acting in the environments: preallocated ``[T, N, ...]`` storage and :func:`collect`.

``collect`` is the only caller of ``envs.step``. It records per step the observation, the
(unclipped) action, its log-probability, the value, the raw reward and the two ends of an
episode, plus ``next_values``: V of the next state, of the *final* observation on a truncated
step, and of the last observation after the final step (see :mod:`ppokit.envs` for the two
autoreset modes and why a NEXT_STEP reset transition is marked invalid).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from ppokit.agent import Agent
from ppokit.envs import VectorEnvs


@dataclass
class Rollout:
    """One iteration of experience on this process. T steps, N envs, P policy outputs.

    obs ``[T, N, *obs]`` (env dtype: uint8 images stay uint8); actions ``[T, N]`` int64 or
    ``[T, N, A]`` float32; log_probs, values, rewards, next_values ``[T, N]`` float32;
    terminated, truncated, valid ``[T, N]`` bool; policy_outputs ``[T, N, P]`` (the acting
    policy's logits or mean/log-std, for exact KL terms).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    next_values: torch.Tensor
    valid: torch.Tensor
    policy_outputs: torch.Tensor

    @classmethod
    def allocate(cls, agent: Agent, envs: VectorEnvs, num_steps: int, device: torch.device) -> Rollout:
        T, N = num_steps, envs.num_envs
        obs_space = envs.observation_space
        obs_dtype = torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
        sample_action = agent.head.sample(torch.zeros(1, agent.head.num_outputs))
        floats = dict(dtype=torch.float32, device=device)
        bools = dict(dtype=torch.bool, device=device)
        return cls(
            obs=torch.zeros((T, N, *obs_space.shape), dtype=obs_dtype, device=device),
            actions=torch.zeros((T, N, *sample_action.shape[1:]), dtype=sample_action.dtype, device=device),
            log_probs=torch.zeros((T, N), **floats),
            values=torch.zeros((T, N), **floats),
            rewards=torch.zeros((T, N), **floats),
            terminated=torch.zeros((T, N), **bools),
            truncated=torch.zeros((T, N), **bools),
            next_values=torch.zeros((T, N), **floats),
            valid=torch.ones((T, N), **bools),
            policy_outputs=torch.zeros((T, N, agent.head.num_outputs), **floats),
        )


@dataclass
class CollectorState:
    """What carries over between iterations (and is checkpointed for an exact resume). All ``[N]``."""

    obs: np.ndarray
    next_is_reset: np.ndarray  # NEXT_STEP mode: the next step of this sub-env is a reset transition
    episode_return: np.ndarray
    episode_length: np.ndarray
    discounted_return: np.ndarray  # for reward scaling

    @classmethod
    def start(cls, obs: np.ndarray) -> CollectorState:
        n = obs.shape[0]
        return cls(obs, np.zeros(n, bool), np.zeros(n), np.zeros(n, np.int64), np.zeros(n))


@dataclass
class Episodes:
    """Episodes that finished during one collect: raw (unscaled) returns and lengths."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


@dataclass
class Timings:
    """Seconds spent per phase, accumulated over a run."""

    env: float = 0.0
    inference: float = 0.0
    update: float = 0.0


@torch.no_grad()
def collect(
    agent: Agent,
    envs: VectorEnvs,
    state: CollectorState,
    storage: Rollout,
    gamma: float,
    timings: Timings,
) -> Episodes:
    """Step all envs ``T`` times with the current policy, filling ``storage`` in place.

    Rewards in ``storage`` are scaled when the agent has a return normalizer (its statistics
    are updated from this rollout's discounted returns first); episode returns are raw.
    """
    device = storage.obs.device
    head = agent.head
    num_steps = storage.obs.shape[0]
    same_step = envs.autoreset_mode == AutoresetMode.SAME_STEP
    episodes = Episodes()
    raw_rewards = np.zeros((num_steps, envs.num_envs), np.float64)
    valid = np.ones((num_steps, envs.num_envs), bool)
    dones = np.zeros((num_steps, envs.num_envs), bool)
    obs = torch.as_tensor(np.ascontiguousarray(state.obs), device=device)
    for t in range(num_steps):
        start = time.perf_counter()
        policy_out, value = agent(obs)
        action = head.sample(policy_out)
        storage.obs[t] = obs
        storage.actions[t] = action
        storage.log_probs[t] = head.log_prob(policy_out, action)
        storage.values[t] = value
        storage.policy_outputs[t] = policy_out
        env_action = head.to_env(action.cpu().numpy())
        middle = time.perf_counter()
        next_obs, reward, terminated, truncated, infos = envs.step(env_action)
        timings.env += time.perf_counter() - middle
        timings.inference += middle - start

        valid[t] = ~state.next_is_reset
        terminated = terminated & valid[t]
        truncated = truncated & valid[t] & ~terminated
        done = terminated | truncated
        raw_rewards[t] = np.where(valid[t], reward, 0.0)
        dones[t] = done
        storage.terminated[t] = torch.from_numpy(terminated)
        storage.truncated[t] = torch.from_numpy(truncated)
        state.episode_return += raw_rewards[t]
        state.episode_length += valid[t]
        if done.any():
            episodes.returns += state.episode_return[done].tolist()
            episodes.lengths += state.episode_length[done].tolist()
            state.episode_return[done] = 0.0
            state.episode_length[done] = 0
        if same_step and truncated.any():
            # Bootstrap from V(final observation): the returned obs is already the reset one.
            start = time.perf_counter()
            index = np.flatnonzero(truncated)
            final = torch.as_tensor(np.stack([infos["final_obs"][i] for i in index]), device=device)
            storage.next_values[t, torch.as_tensor(index, device=device)] = agent(final)[1]
            timings.inference += time.perf_counter() - start
        if not same_step:
            state.next_is_reset = done
        # C order: the numpy CartPole returns a transposed view, and a matmul on it rounds differently
        # from one on the C-ordered copy that a checkpoint restores (resume would not be exact).
        obs = torch.as_tensor(np.ascontiguousarray(next_obs), device=device)
    start = time.perf_counter()
    last_value = agent(obs)[1]
    timings.inference += time.perf_counter() - start
    state.obs = next_obs

    # next_values[t] = V(obs[t+1]); in NEXT_STEP mode obs[t+1] after a done *is* the final obs.
    bootstrap_same_step = storage.truncated if same_step else torch.zeros_like(storage.truncated)
    following = torch.cat([storage.values[1:], last_value[None]], dim=0)
    storage.next_values.copy_(torch.where(bootstrap_same_step, storage.next_values, following))
    storage.valid.copy_(torch.from_numpy(valid))
    storage.rewards.copy_(torch.from_numpy(_scaled_rewards(agent, state, raw_rewards, dones, valid, gamma)))
    return episodes


def _scaled_rewards(agent: Agent, state: CollectorState, rewards: np.ndarray, dones: np.ndarray,
                    valid: np.ndarray, gamma: float) -> np.ndarray:
    """Rewards ``[T, N]`` divided by the running std of the discounted return (if enabled)."""
    normalizer = agent.return_normalizer
    if normalizer is None:
        return rewards.astype(np.float32)
    returns = np.zeros_like(rewards)
    for t in range(rewards.shape[0]):
        state.discounted_return = state.discounted_return * gamma + rewards[t]
        returns[t] = state.discounted_return
        state.discounted_return[dones[t]] = 0.0
    normalizer.update(torch.from_numpy(returns[valid]))
    return normalizer.scale(torch.from_numpy(rewards)).numpy()
