"""Acting in the environments: preallocated ``[T, N, ...]`` storage and :func:`collect`.

``collect`` is the only caller of ``envs.step``. Per step it runs only what acting needs (the
actor, a sample, the env); values, log-probabilities and the bookkeeping of episode ends are
computed once per rollout on the whole ``[T, N]`` block, which gives the same numbers with a
fraction of the per-step operations. The exception is an agent whose actor and critic share a CNN
(:attr:`~ppokit.agent.Agent.acts_with_critic`): its value is one linear layer on the features the
actor computes anyway, so it acts with the whole network and keeps the outputs, and the block is
not passed through the CNN a second time. ``next_values`` is V of the next state: of the *final*
observation on a truncated step, and of the last observation after the final step (see
:mod:`ppokit.envs` for the two autoreset modes and why a NEXT_STEP reset transition is invalid).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from ppokit import pixels

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.envs import VectorEnvs


@dataclass
class Rollout:
    """One iteration of experience on this process. T steps, N envs, P policy outputs.

    obs ``[T, N, *obs]`` (env dtype: uint8 images stay uint8); actions ``[T, N]`` int64 or
    ``[T, N, A]`` float32 (the unclipped sample); log_probs, values, rewards, next_values
    ``[T, N]`` float32; terminated, truncated, valid ``[T, N]`` bool; policy_outputs
    ``[T, N, P]`` (the acting policy's logits or mean/log-std, for exact KL terms).
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
    """Episodes that finished during one collect: raw (unscaled) returns and lengths.

    With envs that report full games (``VectorEnvs.game_scores``: image preprocessing, whose
    training envs may end the learner's episode at a lost life and clip rewards), these are the
    games' raw scores and lengths in agent steps, from ``info["game"]`` (:mod:`ppokit.pixels`)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


@dataclass
class Timings:
    """Seconds spent per phase, accumulated over a run (and saved with it, so a resumed run goes on counting)."""

    env: float = 0.0
    inference: float = 0.0
    update: float = 0.0

    def split(self, wall_time: float) -> dict[str, float]:
        """The time split of ``wall_time`` seconds as metrics.csv / summary.json fields."""
        return {"time_env_s": self.env, "time_inference_s": self.inference, "time_update_s": self.update,
                "time_other_s": wall_time - self.env - self.inference - self.update}


@torch.inference_mode()
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
    are updated from this rollout's discounted returns, of every process, first); episode
    returns are raw.
    """
    rollout = Collection(agent, envs, state, storage, gamma, timings)
    with_critic = agent.acts_with_critic
    sample = None if with_critic else agent.rollout_sampler()
    for t in range(rollout.num_steps):
        start = time.perf_counter()
        if with_critic:
            policy_out, values = agent(storage.obs[t])
            rollout.keep_outputs(t, policy_out, values)
            action = agent.head.sample(policy_out)
        else:
            action = sample(storage.obs[t])
        timings.inference += time.perf_counter() - start
        rollout.step(t, action)
    return rollout.finish()


class Collection:
    """One rollout being collected, step by step: :func:`collect` drives it for one agent; a
    population acts for all its agents with one batched forward per step and then steps each
    agent's collection (:mod:`ppokit.loop`). Call under ``torch.inference_mode()``."""

    def __init__(self, agent: Agent, envs: VectorEnvs, state: CollectorState, storage: Rollout, gamma: float,
                 timings: Timings):
        self.agent, self.envs, self.state, self.storage = agent, envs, state, storage
        self.gamma, self.timings = gamma, timings
        self.num_steps, num_envs = storage.obs.shape[:2]
        shape = (self.num_steps, num_envs)
        self.same_step = envs.autoreset_mode == AutoresetMode.SAME_STEP
        self.rewards = np.zeros(shape)
        self.terminated = np.zeros(shape, bool)
        self.truncated = np.zeros(shape, bool)
        self.valid = np.ones(shape, bool)
        self.final_obs: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # SAME_STEP truncations: t -> (envs, obs)
        self.games = Episodes() if getattr(envs, "game_scores", False) else None  # full games that ended
        self.kept_outputs = 0  # steps whose policy outputs and values keep_outputs stored
        self.next_obs = state.obs
        storage.obs[0] = torch.as_tensor(self.next_obs)

    def keep_outputs(self, t: int, policy_out: torch.Tensor, values: torch.Tensor) -> None:
        """Store step ``t``'s ``policy_out [N, P]`` and ``values [N]`` from the forward that acted; when
        every step has them, :meth:`finish` does not evaluate the block again."""
        self.storage.policy_outputs[t] = policy_out
        self.storage.values[t] = values
        self.kept_outputs += 1

    def step(self, t: int, action: torch.Tensor) -> None:
        """Step ``t``: store the sampled ``action [N, ...]`` and step the envs with it."""
        storage, state = self.storage, self.state
        start = time.perf_counter()
        storage.actions[t] = action
        env_action = self.agent.head.to_env(action.cpu().numpy())
        middle = time.perf_counter()
        self.next_obs, self.rewards[t], self.terminated[t], self.truncated[t], infos = self.envs.step(env_action)
        after = time.perf_counter()
        self.timings.env += after - middle
        self.timings.inference += middle - start
        if self.games is not None and (self.terminated[t].any() or self.truncated[t].any()):
            _record_games(self.games, infos.get("final_info", {}))
        if self.same_step:
            if self.truncated[t].any():
                index = np.flatnonzero(self.truncated[t] & ~self.terminated[t])
                if index.size:
                    self.final_obs[t] = (index, np.stack([infos["final_obs"][i] for i in index]))
        else:
            self.valid[t] = ~state.next_is_reset
            state.next_is_reset = self.terminated[t] | self.truncated[t]
        if t + 1 < self.num_steps:
            storage.obs[t + 1] = torch.as_tensor(self.next_obs)

    def finish(self) -> Episodes:
        """After the last step: values, log-probabilities, bootstraps, scaled rewards; the episodes that ended."""
        agent, storage, state, head = self.agent, self.storage, self.state, self.agent.head
        device = storage.obs.device
        T, N = self.num_steps, storage.obs.shape[1]
        next_obs, rewards, terminated, truncated, valid = (self.next_obs, self.rewards, self.terminated,
                                                            self.truncated, self.valid)
        state.obs = next_obs

        start = time.perf_counter()
        if self.kept_outputs < T:  # the policy did not change during the rollout: evaluate the whole block at once
            policy_out, values = agent(storage.obs.reshape(T * N, *storage.obs.shape[2:]))
            storage.policy_outputs.copy_(policy_out.reshape(T, N, -1))
            storage.values.copy_(values.reshape(T, N))
        flat_actions = storage.actions.reshape(T * N, *storage.actions.shape[2:])
        storage.log_probs.copy_(head.log_prob(storage.policy_outputs.reshape(T * N, -1), flat_actions).reshape(T, N))
        # C order: the numpy CartPole returns a transposed view, and a matmul on it rounds differently
        # from one on the C-ordered copy that a checkpoint restores (a resume would not be exact).
        last_value = agent(torch.as_tensor(np.ascontiguousarray(next_obs), device=device))[1]
        # next_values[t] = V(obs[t+1]); in NEXT_STEP mode obs[t+1] after a done *is* the final obs.
        storage.next_values[:-1] = storage.values[1:]
        storage.next_values[-1] = last_value
        for t, (index, obs) in self.final_obs.items():  # SAME_STEP: bootstrap from V(final observation)
            final_values = agent(torch.as_tensor(obs, device=device))[1]
            storage.next_values[t, torch.as_tensor(index, device=device)] = final_values
        self.timings.inference += time.perf_counter() - start

        terminated &= valid
        truncated &= valid & ~terminated
        rewards *= valid
        storage.terminated.copy_(torch.from_numpy(terminated))
        storage.truncated.copy_(torch.from_numpy(truncated))
        storage.valid.copy_(torch.from_numpy(valid))
        dones = terminated | truncated
        storage.rewards.copy_(torch.from_numpy(_scaled_rewards(agent, state, rewards, dones, valid, self.gamma)))
        episodes = _finished_episodes(state, rewards, dones, valid)
        return self.games if self.games is not None else episodes


def _record_games(games: Episodes, final_info: dict) -> None:
    """Add to ``games`` the full games that ended on a step: ``final_info["game"]`` holds ``[N]``
    arrays of returns ``r`` and lengths ``l``, valid where the mask ``final_info["_game"]`` is set."""
    game = final_info.get(pixels.GAME_KEY)
    if game is None:
        return
    for i in np.flatnonzero(final_info[f"_{pixels.GAME_KEY}"]):
        games.returns.append(float(game["r"][i]))
        games.lengths.append(int(game["l"][i]))


def _finished_episodes(state: CollectorState, rewards: np.ndarray, dones: np.ndarray, valid: np.ndarray) -> Episodes:
    """Returns and lengths of the episodes that ended in this rollout; carries the rest over."""
    episodes = Episodes()
    returns = np.cumsum(rewards, axis=0) + state.episode_return  # running sums as if no episode ended
    lengths = np.cumsum(valid, axis=0) + state.episode_length
    times, envs = np.nonzero(dones)
    order = np.lexsort((times, envs))  # by env, then time: each episode starts after the previous end
    offset_return = np.zeros(dones.shape[1])
    offset_length = np.zeros(dones.shape[1], np.int64)
    for t, n in zip(times[order], envs[order]):
        episodes.returns.append(float(returns[t, n] - offset_return[n]))
        episodes.lengths.append(int(lengths[t, n] - offset_length[n]))
        offset_return[n], offset_length[n] = returns[t, n], lengths[t, n]
    state.episode_return = returns[-1] - offset_return
    state.episode_length = lengths[-1] - offset_length
    return episodes


def transformed_rewards(rewards: np.ndarray, valid: np.ndarray, shift: float, scale: float) -> np.ndarray:
    """The learner's rewards ``(r + shift) * scale`` ``[T, N]`` (``env.reward_shift``,
    ``env.reward_scale``), 0 where ``valid [T, N]`` is False (a NEXT_STEP reset transition has no
    reward to learn from); ``rewards`` itself when the transform is the identity."""
    if shift == 0.0 and scale == 1.0:
        return rewards
    return (rewards + shift) * scale * valid


def _scaled_rewards(agent: Agent, state: CollectorState, rewards: np.ndarray, dones: np.ndarray,
                    valid: np.ndarray, gamma: float) -> np.ndarray:
    """Rewards ``[T, N]`` as the learner sees them: transformed (:func:`transformed_rewards`), then
    divided by the running std of the discounted return (if enabled); the statistics merge the
    discounted returns of every process, so all scale rewards alike. The episode returns reported
    are computed from the raw rewards, not these."""
    rewards = transformed_rewards(rewards, valid, agent.reward_shift, agent.reward_scale)
    normalizer = agent.return_normalizer
    if normalizer is None:
        return rewards.astype(np.float32)
    returns = np.zeros_like(rewards)
    for t in range(rewards.shape[0]):
        state.discounted_return = state.discounted_return * gamma + rewards[t]
        returns[t] = state.discounted_return
        state.discounted_return[dones[t]] = 0.0
    normalizer.update_over_processes(torch.from_numpy(returns[valid]))
    return normalizer.scale(torch.from_numpy(rewards)).numpy()
