"""``env.vector=envpool``: EnvPool's NEXT_STEP autoreset gives the rollout the same masks, bootstraps
and advantages as gymnasium's envs on the same trajectories; Atari through EnvPool bootstraps from the
final frames at the time limit and reports full games with raw scores; ids, options and a missing
extra refused in one line; a resume continues on fresh envs and says so."""

from __future__ import annotations

import json
import logging
import re
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode

from ppokit.advantages import gae
from ppokit.agent import Agent
from ppokit.config import ConfigError, validate
from ppokit.demo_envs import CATCH_ID
from ppokit.envs import EnvSource, VectorEnvs, make_envs
from ppokit.rollout import Collection, CollectorState, Episodes, Rollout, Timings
from ppokit.run import train
from tests.helpers import small_config

pytest.importorskip("envpool")

T, N, LIMIT, GAMMA = 40, 4, 12, 0.9


def policy(obs: torch.Tensor) -> torch.Tensor:
    """A deterministic policy of the observation: even sub-envs always push left (the pole falls:
    terminations), odd ones balance (the time limit: truncations)."""
    balance = (obs[:, 2] + 0.5 * obs[:, 3] > 0).long()
    even = torch.arange(obs.shape[0]) % 2 == 0
    return torch.where(even, torch.zeros_like(balance), balance)


def collect(agent: Agent, envs: VectorEnvs) -> tuple[Rollout, np.ndarray]:
    """The rollout of ``policy`` through :class:`Collection`, and the observations ``[T + 1, N]``
    the envs returned (the reset's, then each step's)."""
    storage = Rollout.allocate(agent, envs, T, torch.device("cpu"))
    state = CollectorState.start(envs.reset())
    with torch.inference_mode():
        collection = Collection(agent, envs, state, storage, GAMMA, Timings())
        for t in range(T):
            collection.step(t, policy(storage.obs[t]))
        collection.finish()
    return storage, np.concatenate([storage.obs.numpy(), state.obs[None]])


class FollowStates(gym.vector.VectorWrapper):
    """Gymnasium's NEXT_STEP CartPole that starts every episode where ``reference`` (the
    observations EnvPool returned, ``[T + 1, N, 4]``) did: the same trajectories, stepped by gymnasium."""

    def __init__(self, env: CartPoleVectorEnv, reference: np.ndarray):
        super().__init__(env)
        self.reference, self.t = reference, 0
        self.done = np.zeros(env.num_envs, bool)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.env.unwrapped.state = self.reference[0].T.astype(np.float64)
        self.t, self.done[:] = 0, False
        return self.reference[0].copy(), info

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        self.t += 1
        obs = np.array(obs)
        for i in np.flatnonzero(self.done):  # this step reset sub-env i: start it where EnvPool did
            self.env.unwrapped.state[:, i] = self.reference[self.t, i]
            obs[i] = self.reference[self.t, i]
        self.done = terminated | truncated
        return obs, rewards, terminated, truncated, info


class StartAt(gym.Wrapper):
    """A single CartPole whose episodes start at the given states, in order (then as usual)."""

    def __init__(self, env: gym.Env, starts: list[np.ndarray]):
        super().__init__(env)
        self.starts = list(starts)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if self.starts:
            self.env.unwrapped.state = self.starts.pop(0).astype(np.float64)
            obs = np.array(self.env.unwrapped.state, dtype=np.float32)
        return obs, info


@pytest.fixture(scope="module")
def pooled():
    cfg = small_config("CartPole-v1", env={"vector": "envpool", "kwargs": {"max_episode_steps": LIMIT}},
                       rollout={"num_envs": N, "num_steps": T})
    envs = make_envs(cfg)
    assert envs.autoreset_mode == AutoresetMode.NEXT_STEP
    torch.manual_seed(0)
    agent = Agent(envs.observation_space, envs.action_space, cfg.model, cfg.env)
    storage, seen = collect(agent, envs)
    envs.close()
    return agent, storage, seen


def values_of(agent: Agent, obs: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return agent(torch.as_tensor(obs, dtype=torch.float32))[1]


def test_envpool_truncation_bootstraps_from_the_final_observation(pooled) -> None:
    agent, storage, seen = pooled
    terminated, truncated, valid = storage.terminated.numpy(), storage.truncated.numpy(), storage.valid.numpy()
    assert terminated.any() and truncated.any(), "the policy gives both kinds of episode ends"
    for t, i in zip(*np.nonzero(truncated)):
        # The done step's next observation is the final one (it continues the episode's last
        # observation), and next_values is V of it.
        assert storage.next_values[t, i] == pytest.approx(float(values_of(agent, seen[t + 1, i][None])[0]), abs=1e-5)
        assert abs(seen[t + 1, i][0] - seen[t, i][0]) < 0.1, "a final observation, not a reset one"
        if t + 1 < T:  # the next step is the reset transition: masked out, no reward, no episode end
            assert not valid[t + 1, i] and storage.rewards[t + 1, i] == 0
            assert not terminated[t + 1, i] and not truncated[t + 1, i]
    assert (~valid).sum() == sum(int((terminated | truncated)[:-1, i].sum()) for i in range(N))
    # Time limits are where EnvPool puts them: every LIMIT valid steps of the balancing envs.
    for i in range(1, N, 2):
        ends = np.flatnonzero(truncated[:, i])
        assert list(np.cumsum(valid[:, i])[ends]) == [LIMIT * (k + 1) for k in range(len(ends))]


def test_envpool_rollout_equals_gymnasium_next_step_on_the_same_trajectories(pooled) -> None:
    agent, storage, seen = pooled
    gym_env = FollowStates(CartPoleVectorEnv(num_envs=N, max_episode_steps=LIMIT), seen)
    theirs, their_seen = collect(agent, VectorEnvs(gym_env, "CartPole-v1", AutoresetMode.NEXT_STEP, 0))
    for name in ("terminated", "truncated", "valid", "rewards"):
        assert torch.equal(getattr(storage, name), getattr(theirs, name)), name
    np.testing.assert_allclose(their_seen, seen, atol=1e-4)
    for name in ("values", "next_values"):
        torch.testing.assert_close(getattr(storage, name), getattr(theirs, name), atol=1e-4, rtol=0)
    ours_adv = gae(storage.rewards, storage.values, storage.next_values, storage.terminated, storage.truncated,
                   GAMMA, 0.95)[0]
    their_adv = gae(theirs.rewards, theirs.values, theirs.next_values, theirs.terminated, theirs.truncated,
                    GAMMA, 0.95)[0]
    torch.testing.assert_close(ours_adv, their_adv, atol=1e-4, rtol=0)


def test_envpool_valid_transitions_equal_gymnasium_same_step(pooled) -> None:
    """Against SyncVectorEnv (SAME_STEP, final observations in infos): EnvPool's valid transitions,
    per sub-env, are the same sequence, with the same bootstraps and advantages (episodes that end)."""
    agent, storage, seen = pooled
    done = (storage.terminated | storage.truncated).numpy()
    starts = [[seen[0, i]] + [seen[t + 2, i] for t in np.flatnonzero(done[:, i]) if t + 2 <= T] for i in range(N)]
    sync = gym.vector.SyncVectorEnv(
        [lambda i=i: StartAt(gym.make("CartPole-v1", max_episode_steps=LIMIT), starts[i]) for i in range(N)],
        autoreset_mode=AutoresetMode.SAME_STEP)
    theirs, _ = collect(agent, VectorEnvs(sync, "CartPole-v1", AutoresetMode.SAME_STEP, 0))
    assert bool(theirs.valid.all())
    ours_adv = gae(storage.rewards, storage.values, storage.next_values, storage.terminated, storage.truncated,
                   GAMMA, 0.95)[0]
    their_adv = gae(theirs.rewards, theirs.values, theirs.next_values, theirs.terminated, theirs.truncated,
                    GAMMA, 0.95)[0]
    for i in range(N):
        mine = storage.valid[:, i].numpy()
        k = int(mine.sum())
        ended = np.flatnonzero(done[mine, i])
        assert ended.size, "every sub-env ends an episode in the rollout"
        whole = ended[-1] + 1  # transitions of episodes that ended: their advantages do not depend on T
        for name in ("terminated", "truncated", "rewards"):
            assert torch.equal(getattr(storage, name)[mine, i], getattr(theirs, name)[:k, i]), (name, i)
        torch.testing.assert_close(storage.obs[mine, i], theirs.obs[:k, i], atol=1e-4, rtol=0)
        bootstraps = ~storage.terminated[mine, i]  # a terminal state's next value is never used
        torch.testing.assert_close(storage.next_values[mine, i][bootstraps], theirs.next_values[:k, i][bootstraps],
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(ours_adv[mine, i][:whole], their_adv[:whole, i], atol=1e-4, rtol=0)


@pytest.mark.parametrize(("env_id", "message"), [
    ("ALE/Pong-v5", r"^env.vector=envpool: Atari \('ALE/Pong-v5'\) runs with pixels.preprocess=atari only"),
    (CATCH_ID, rf"^env.vector=envpool: envpool has no '{CATCH_ID}': envpool has no such env"),
    ("Taxi-v4", r"^env.vector=envpool: envpool has no 'Taxi-v4': envpool provides Taxi-v3 \(or use env.vector=auto\)$"),
])
def test_envpool_refuses_ids_it_does_not_share(env_id: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_envs(small_config(env_id, env={"vector": "envpool"}, pixels={"preprocess": "none"}))


def test_envpool_names_the_versions_it_has() -> None:
    with pytest.raises(ConfigError, match=r"envpool has no 'Pendulum-v9': envpool provides Pendulum-v0, Pendulum-v1"):
        make_envs(small_config("Pendulum-v9", env={"vector": "envpool"}))


def test_envpool_missing_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "envpool", None)
    cfg = validate(small_config(env={"vector": "envpool"}))
    with pytest.raises(ConfigError, match=r"^env.vector=envpool needs the envpool package: "
                                          r"pip install 'ppokit\[envpool\]'$"):
        make_envs(cfg)


def test_envpool_continuous_actions_pendulum() -> None:
    envs = make_envs(small_config("Pendulum-v1", env={"vector": "envpool"}))
    assert envs.action_space == gym.make("Pendulum-v1").action_space  # gymnasium's spaces (float32)
    envs.reset()
    obs, rewards, *_ = envs.step(np.zeros((2, 1), np.float32))
    assert obs.shape == (2, 3) and rewards.shape == (2,)
    envs.close()


def test_envpool_resume_continues_on_fresh_envs(tmp_path, caplog) -> None:
    cfg = small_config(env={"vector": "envpool"})
    cfg.total_steps = 2 * cfg.batch_size
    train(cfg, run_dir=tmp_path / "run", quiet=True)
    cfg.total_steps = 4 * cfg.batch_size
    with caplog.at_level(logging.WARNING, logger="ppokit"):
        result = train(cfg, resume=tmp_path / "run", quiet=True)
    assert result.summary["status"] == "completed" and result.summary["total_steps"] == 4 * cfg.batch_size
    lines = [r.getMessage() for r in caplog.records if "env state" in r.getMessage()]
    assert lines == ["the env state was not saved (env.vector=envpool keeps it out of reach): the resumed run "
                     "starts new episodes on fresh envs"]


def test_envpool_refuses_an_env_factory() -> None:
    source = EnvSource(lambda: gym.make("CartPole-v1"))
    with pytest.raises(ConfigError, match=r"^env.vector=envpool makes envs from an env id only"):
        make_envs(small_config(env={"vector": "envpool"}), source=source)


def test_envpool_mujoco_has_gymnasium_spaces() -> None:
    pytest.importorskip("mujoco")
    envs = make_envs(small_config("HalfCheetah-v5", env={"vector": "envpool"}))
    gym_env = gym.make("HalfCheetah-v5")
    # EnvPool's own action space is float64; the agent gets gymnasium's (float32), as eval will.
    assert envs.action_space == gym_env.action_space and envs.observation_space == gym_env.observation_space
    envs.reset()
    obs, *_ = envs.step(np.zeros((2, 6), np.float32))
    assert obs.shape == (2, 17)
    envs.close()
    gym_env.close()


# ---------------------------------------------------------------------------- Atari

ATARI_T, ATARI_STEPS = 72, 50  # rollout length; the time limit in agent steps (200 frames, 4 per step)


def random_actions(obs: torch.Tensor, rng: np.random.Generator, n_actions: int) -> torch.Tensor:
    return torch.as_tensor(rng.integers(n_actions, size=obs.shape[0]))


def atari_rollout(env_id: str, **pixels) -> tuple[Agent, Rollout, np.ndarray, Episodes, VectorEnvs]:
    """A rollout of random actions (seed 0) on 2 EnvPool sub-envs of ``env_id`` whose games are cut
    after ``ATARI_STEPS`` agent steps; returns the agent, storage, the observations ``[T + 1, N, ...]``,
    the full games that ended, and the (closed) envs."""
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    cfg = small_config(env_id, env={"vector": "envpool", "kwargs": {"max_num_frames_per_episode": 4 * ATARI_STEPS}},
                       rollout={"num_envs": 2, "num_steps": ATARI_T}, pixels=pixels)
    envs = make_envs(cfg)
    torch.manual_seed(0)
    agent = Agent(envs.observation_space, envs.action_space, cfg.model, cfg.env)
    storage = Rollout.allocate(agent, envs, ATARI_T, torch.device("cpu"))
    state = CollectorState.start(envs.reset())
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        collection = Collection(agent, envs, state, storage, GAMMA, Timings())
        for t in range(ATARI_T):
            collection.step(t, random_actions(storage.obs[t], rng, int(envs.action_space.n)))
        games = collection.finish()
    envs.close()
    return agent, storage, np.concatenate([storage.obs.numpy(), state.obs[None]]), games, envs


def test_envpool_atari_truncation_bootstraps_from_the_final_frames() -> None:
    """Breakout through EnvPool: a lost life ends the learner's episode, the time limit truncates the
    game after ``ATARI_STEPS`` learned steps, and the truncated step's next value is V of its final
    frames (the stack goes on from the step before: a continuation, not a reset's frames)."""
    agent, storage, seen, games, envs = atari_rollout("ALE/Breakout-v5")
    assert envs.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)  # gymnasium's, as eval has
    terminated, truncated, valid = storage.terminated.numpy(), storage.truncated.numpy(), storage.valid.numpy()
    assert terminated.any(), "random play loses a life within 50 steps"
    assert truncated.sum() == 2, "each sub-env's game reaches the time limit once"
    for t, i in zip(*np.nonzero(truncated)):
        assert int(valid[: t + 1, i].sum()) == ATARI_STEPS
        np.testing.assert_array_equal(seen[t + 1, i][:3], seen[t, i][1:])  # the final frames continue the stack
        with torch.no_grad():
            final_value = float(agent(torch.as_tensor(seen[t + 1, i][None]))[1])
        assert storage.next_values[t, i] == pytest.approx(final_value, abs=1e-5)
        assert not valid[t + 1, i] and storage.rewards[t + 1, i] == 0  # the reset transition is not learned
    assert games.lengths == [ATARI_STEPS, ATARI_STEPS]  # one full game per sub-env, not one per life


def test_envpool_atari_reports_raw_game_scores_and_clips_the_learners_rewards() -> None:
    """Space Invaders (rewards 5 to 30 points): the learner's rewards are clipped to +-1 and each
    game's score is the raw sum, both against EnvPool itself stepped with the same actions and no
    clipping."""
    import envpool

    _, storage, _, games, _ = atari_rollout("ALE/SpaceInvaders-v5", episodic_life=False, fire_reset=False)
    reference = envpool.make("SpaceInvaders-v5", env_type="gymnasium", num_envs=2, seed=0, reward_clip=False,
                             episodic_life=False, use_fire_reset=False, max_episode_steps=ATARI_STEPS,
                             repeat_action_probability=0.25)
    reference.reset()
    rng = np.random.default_rng(0)
    raw, scores, score = [], [], np.zeros(2)
    for _ in range(ATARI_T):
        _, reward, terminated, truncated, _ = reference.step(rng.integers(reference.single_action_space.n, size=2))
        raw.append(reward)
        score += reward
        for i in np.flatnonzero(terminated | truncated):
            scores.append(float(score[i]))
            score[i] = 0.0
    reference.close()
    raw = np.array(raw)
    assert raw.max() > 1, "points worth more than one in these games"
    np.testing.assert_array_equal(storage.rewards.numpy(), np.sign(raw))
    assert sorted(games.returns) == sorted(scores) and max(games.returns) > 1


def test_envpool_atari_options_are_the_pixels_sections() -> None:
    from ppokit.config import PixelsConfig
    from ppokit.envs import atari_options

    pytest.importorskip("ale_py")
    options = atari_options("ALE/Pong-v5", PixelsConfig(size=64, frame_skip=3, noop_max=7, clip_reward=False), {})
    assert options == {"repeat_action_probability": 0.25, "full_action_space": False, "max_episode_steps": 36_000,
                       "img_height": 64, "img_width": 64, "gray_scale": True, "stack_num": 4, "frame_skip": 3,
                       "noop_max": 7, "use_fire_reset": True, "episodic_life": True, "reward_clip": False}
    options = atari_options("ALE/Pong-v5", PixelsConfig(), {"repeat_action_probability": 0.0,
                                                            "max_num_frames_per_episode": 400})
    assert options["repeat_action_probability"] == 0.0 and options["max_episode_steps"] == 100


@pytest.mark.parametrize(("options", "message"), [
    ({"env.kwargs": "{obs_type: ram}"}, r"^env.kwargs: obs_type cannot be given to envpool's Atari envs \(accepted: "),
    ({"env.kwargs": "{frameskip: 4}", "pixels.frame_skip": "1"},
     r"^env.kwargs.frameskip=4: with env.vector=envpool the frames are skipped by pixels.frame_skip"),
    ({"pixels.episodic_life": "false"}, r"^pixels.fire_reset=true with pixels.episodic_life=false: EnvPool presses "),
    ({"pixels.grayscale": "false"}, r"^env.vector=envpool: envpool's 'Pong-v5' has observation space Box\(0, 255, "
                                    r"\(12, 84, 84\), uint8\), gymnasium's 'ALE/Pong-v5' has Box\(0, 255, "
                                    r"\(4, 84, 84, 3\)"),
])
def test_envpool_atari_options_it_cannot_follow_are_one_line(options: dict, message: str, capsys, tmp_path) -> None:
    from tests.errors_support import train_tiny

    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    sets = [arg for key, value in options.items() for arg in ("--set", f"{key}={value}")]
    assert train_tiny(tmp_path / "run", "--set", "env.vector=envpool", *sets, env="ALE/Pong-v5") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(message, err.removeprefix("ppokit: error: ")), err
    assert not (tmp_path / "run").exists()


def test_envpool_atari_trains_and_its_checkpoint_evaluates_on_gymnasium(capsys, tmp_path) -> None:
    from tests.errors_support import run_cli, summary, train_tiny

    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    run = tmp_path / "run"
    assert train_tiny(run, "--set", "env.vector=envpool", env="ALE/Breakout-v5", total_steps=1024) == 0
    assert summary(run)["train_return_last20"] is not None  # full games ended and were counted
    code, out, _ = run_cli(capsys, ["eval", run, "--episodes", "1", "--max-episode-steps", "10", "--json"])
    assert code == 0 and json.loads(out)["lengths"] == [10]
